"""A clock for the phases of a training step, attached to either system from outside.

Why from outside: the same wrappers time TRL and medrl's transformers-generate path, so a phase
means the same thing in both, and neither library is edited. medrl's own sampler never calls
model.generate, so for medrl's GRPO step the generation, log-prob and backward phases come from
GRPOModule's time/* metrics, taken at the same boundaries (medrl.bench.medrl_side).
Each wrapper replaces one attribute of one object (an instance attribute, never a class or
module global), except the optimizer hooks, which are torch's own global step hooks (a worker
process holds exactly one optimizer).

Phases of a GRPO step (seconds; `other` is what is left of the step):
    prefill         the first model forward of each `generate` call (all B*G prompt rows,
                    filling the KV cache), timed by a wrapper on the causal LM's forward;
                    medrl's sampler: the forward over the B distinct prompts
    decode          generate's wall time minus prefill: the token-by-token forwards, sampling
                    and stopping checks
    reward          scoring the completions (the same medrl reward set in both systems)
    ref_logprobs    log-prob passes without gradients: the reference policy (and, with mu > 1,
                    the old policy), forward + log-softmax gather
    policy_forward  log-prob passes with gradients (forward + log-softmax gather)
    policy_backward backward of the loss
    optimizer       optimizer.step()
    other           loss math, advantages, gradient clipping, logging, framework overhead
On CUDA every boundary synchronizes the device, so a phase holds its kernels.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

PHASES = (
    "prefill",
    "decode",
    "reward",
    "ref_logprobs",
    "policy_forward",
    "policy_backward",
    "optimizer",
    "other",
)


@dataclass
class StepRecord:
    """One step: wall seconds, seconds per phase, counters (tokens, rows), and extra values
    the system reports itself (medrl's time/* metrics)."""

    seconds: float
    measured: bool
    phases: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)


class PhaseClock:
    """Collects StepRecords; the first `warmup` steps are kept but marked unmeasured."""

    def __init__(self, warmup: int = 0, sync: Callable[[], None] | None = None) -> None:
        self.warmup = warmup
        self.sync = sync or (lambda: None)
        self.steps: list[StepRecord] = []
        self.in_generate = False
        self.generate_forwards = 0
        self._start: float | None = None
        self._phases: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()

    def begin_step(self) -> None:
        self.sync()
        self._phases.clear()
        self._counters.clear()
        self._start = time.perf_counter()

    def end_step(self, reported: dict[str, float] | None = None) -> StepRecord:
        self.sync()
        if self._start is None:
            raise RuntimeError("end_step without begin_step")
        seconds = time.perf_counter() - self._start
        self._start = None
        record = StepRecord(
            seconds=seconds,
            measured=len(self.steps) >= self.warmup,
            phases=step_phases(seconds, dict(self._phases)),
            counters=dict(self._counters),
            reported=dict(reported or {}),
        )
        self.steps.append(record)
        return record

    def add(self, name: str, seconds: float) -> None:
        if self._start is not None:  # time outside a step (set-up) is not any step's
            self._phases[name] += seconds

    def count(self, name: str, value: float) -> None:
        if self._start is not None:
            self._counters[name] += value

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.add(name, time.perf_counter() - start)


def step_phases(seconds: float, raw: dict[str, float]) -> dict[str, float]:
    """The reported phases of a step from the raw timers: decode = generate - prefill, other =
    the step minus every phase (never below 0); `generate` is kept for reference."""
    phases = {name: raw.get(name, 0.0) for name in PHASES if name not in ("decode", "other")}
    generate = raw.get("generate", 0.0)
    phases["decode"] = max(generate - phases["prefill"], 0.0)
    phases["other"] = max(seconds - sum(phases.values()), 0.0)
    phases["generate"] = generate
    return phases


def replace_method(obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
    """Set obj.<name> (an instance attribute) to make(current bound method), keeping the
    original's signature (transformers inspects forward's parameters)."""
    original = getattr(obj, name)
    if original is None or not callable(original):
        raise AttributeError(f"{type(obj).__name__}.{name} is not a method to instrument")
    setattr(obj, name, functools.wraps(original)(make(original)))


def time_calls(clock: PhaseClock, obj: Any, name: str, phase: str) -> None:
    """Time every call of obj.<name> as `phase`."""

    def make(original: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with clock.phase(phase):
                return original(*args, **kwargs)

        return timed

    replace_method(obj, name, make)


def time_logprob_passes(clock: PhaseClock, obj: Any, name: str) -> None:
    """Time obj.<name> (a log-prob pass) as policy_forward when gradients are on, else as
    ref_logprobs."""

    def make(original: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            phase = "policy_forward" if torch.is_grad_enabled() else "ref_logprobs"
            with clock.phase(phase):
                return original(*args, **kwargs)

        return timed

    replace_method(obj, name, make)


def time_generation(
    clock: PhaseClock, model: torch.nn.Module, lm: torch.nn.Module, eos_ids: Sequence[int]
) -> None:
    """Time model.generate (and count its completion tokens), and the first forward of `lm`
    (the causal LM that generate runs) inside each generate call as prefill."""
    from medrl.rollout import completion_mask_from_eos

    def make_generate(original: Callable) -> Callable:
        def generate(*args: Any, **kwargs: Any) -> Any:
            clock.in_generate, clock.generate_forwards = True, 0
            try:
                with clock.phase("generate"):
                    output = original(*args, **kwargs)
            finally:
                clock.in_generate = False
            prompt = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            sequences = output if isinstance(output, torch.Tensor) else output.sequences
            completion = sequences[:, prompt.shape[1] :].cpu()  # [N, C]
            mask, _ = completion_mask_from_eos(completion, eos_ids)  # [N, C]
            clock.count("completion_tokens", float(mask.sum()))
            clock.count("rows", float(completion.shape[0]))
            clock.count("decode_width", float(completion.shape[1]))
            clock.count("prompt_width", float(prompt.shape[1]))
            return output

        return generate

    def make_forward(original: Callable) -> Callable:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if not clock.in_generate:
                return original(*args, **kwargs)
            clock.generate_forwards += 1
            if clock.generate_forwards > 1:
                return original(*args, **kwargs)
            with clock.phase("prefill"):
                return original(*args, **kwargs)

        return forward

    replace_method(model, "generate", make_generate)
    replace_method(lm, "forward", make_forward)


@contextmanager
def time_optimizer_steps(clock: PhaseClock) -> Iterator[None]:
    """Time every optimizer.step() in this process (torch's global step hooks)."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    started: list[float] = []

    def before(optimizer: Any, args: Any, kwargs: Any) -> None:
        clock.sync()
        started.append(time.perf_counter())

    def after(optimizer: Any, args: Any, kwargs: Any) -> None:
        clock.sync()
        if started:
            clock.add("optimizer", time.perf_counter() - started.pop())

    handles = [register_optimizer_step_pre_hook(before), register_optimizer_step_post_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside a (peft-wrapped) policy: what generate runs."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def device_sync(device: str) -> Callable[[], None] | None:
    """torch.cuda.synchronize on CUDA (so phases hold their kernels), nothing on the CPU."""
    return torch.cuda.synchronize if device == "cuda" else None


def linear_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weight of every nn.Linear in `model`, a tied weight (head = embedding) once."""
    found: dict[int, torch.Tensor] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None:
            found.setdefault(id(weight), weight)
    return list(found.values())


def decode_flops_per_row(model: torch.nn.Module) -> int:
    """Floating-point operations of one row of a decode forward's products: 2 per weight of
    every Linear (multiply and add; a tied weight once, as `decode_weight_bytes` counts).
    Attention over the cache, norms and sampling are not counted (a few percent at this size)."""
    return sum(2 * weight.numel() for weight in linear_weights(model))


def decode_weight_bytes(model: torch.nn.Module, precision: str) -> int:
    """Bytes of weights one decode forward must read from memory: every Linear's weight (the
    output head among them; with tied embeddings that is the embedding matrix) at the width the
    products run in (2 bytes under bf16-mixed, whose products autocast to bfloat16; else the
    weight's own; peft's LoRA factors are Linears too, a few percent). Embedding lookups gather a
    few rows and norms are vectors: not counted. With
    the memory read bandwidth this gives the decode floor: no decode step can take less time
    than reading its weights once (`medrl.bench.stats.decode_floor`)."""
    return sum(
        weight.numel() * (2 if precision == "bf16-mixed" else weight.element_size())
        for weight in linear_weights(model)
    )
