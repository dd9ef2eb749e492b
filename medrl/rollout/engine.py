"""The rollout engine: the one place that decides how a policy samples and runs its passes.

The algorithms ask an engine for contexts and import nothing else from medrl.rollout's
internals: `sampling(model)` around generation, `passes(*models)` around GRPO's log-prob
passes (reference, old and update, forward and backward), `linears(model)` around SFT's
forward and backward; `generate` and `logprobs` run a rollout and its log-probs with the
engine's settings, `before_micro_batch` is the hook between update micro-batches.

Which pieces run is decided once, by device (`engine_pieces`), when the engine is built:

- everywhere, the device-independent ones, each exact where it applies and skipped by its own
  check where it would not be: medrl's sampler (each prompt prefilled once for its G samples,
  finished rows leaving the batch, the in-place KV cache), LoRA merged while sampling (only
  float32/float64 weights), prompt-shared and packed log-prob passes (packing only where the
  attention takes a tree mask: sdpa or eager), log-probs taken from the hidden states by chunks
  (fused_head), and frozen weights cast once under autocast;
- on a CPU only, the pieces measured on the 2-core CPUs this project runs on: float32 Linears in
  oneDNN and medrl's one-token decode attention for half precision (each where timing says it
  is faster, the decision stored per machine kind: medrl.rollout.decision_store), attention
  and MLPs that keep fewer activations for the backward (they route sdpa calls, which on a GPU
  would replace the attention the user chose), the caps on oneDNN's per-shape kernel caches,
  glibc heap release between update micro-batches, and under autocast the frozen weights'
  copies kept for the run with their float32 pages handed back to the OS where they are mapped
  from the checkpoint (medrl.rollout.merged_adapter.CastCopies).

On CUDA the engine is therefore transformers' own path (sdpa / flash attention, its caches)
plus the device-independent wins. Building an engine for a CPU bounds the kernel caches (in
the environment, before the first oneDNN call) and registers the attention functions it uses;
importing medrl sets nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrl.rollout import decode_attention, kernel_choice
from medrl.rollout.decode_attention import register_decode_attention, sampling_attention
from medrl.rollout.generation import Rollout, eval_mode, model_device, sample_rollout
from medrl.rollout.lean_passes import lean_passes, register_lean_attention
from medrl.rollout.logprobs import completion_logprobs
from medrl.rollout.merged_adapter import (
    CastCopies,
    autocast_dtype,
    autocast_weights,
    merged_lora,
)
from medrl.rollout.onednn_linear import bound_kernel_caches, onednn_linears
from medrl.rollout.settings import STRAIGHTFORWARD, EngineSettings, SamplingSettings
from medrl.rollout.static_decode import StaticDecoder
from medrl.utils.heap import release_free_heap


@dataclass(frozen=True)
class EnginePieces:
    """What an engine runs on its device: EngineSettings resolved for one device type."""

    device_type: str
    sampler: str  # medrl | hf
    merge_adapter: bool
    shared_prompt_logprobs: bool
    pack_completions: bool
    fused_head: bool
    autocast_weights: bool  # frozen weights cast once under autocast (always: same numbers)
    cpu_linear: str  # onednn | torch | auto (timed per phase, medrl.rollout.kernel_choice)
    decode: str  # dynamic | static | compiled (medrl's sampler; medrl.rollout.static_decode)
    prepack_sampling_weights: bool  # CPU only: oneDNN Linears read prepacked weights in sampling
    decode_attention: bool | str  # CPU only; auto: timed against sdpa, stored per CPU kind
    lean_activations: bool  # CPU only
    kernel_cache_capacity: int | None  # CPU only; None = oneDNN's own default
    release_heap: bool  # CPU only
    keep_cast_weights: bool  # CPU only: autocast copies of frozen weights kept for the run
    release_cast_sources: bool  # CPU only: ... and their file-backed float32 pages released


def engine_pieces(settings: EngineSettings, device: torch.device | str) -> EnginePieces:
    """The pieces `settings` asks for that run on `device` (e.g. "cpu", "cuda:0").

    The CPU pieces (cpu_linear onednn or auto, decode_attention, lean_activations,
    kernel_cache_capacity, release_heap, keep_cast_weights, release_cast_sources) are off on
    any other device (cpu_linear is "torch" there); the rest hold there as set."""
    device_type = torch.device(device).type
    on_cpu = device_type == "cpu"
    return EnginePieces(
        device_type=device_type,
        sampler=settings.sampler,
        merge_adapter=settings.merge_adapter,
        shared_prompt_logprobs=settings.shared_prompt_logprobs,
        pack_completions=settings.shared_prompt_logprobs and settings.pack_completions,
        fused_head=settings.shared_prompt_logprobs
        and settings.pack_completions
        and settings.fused_head,
        autocast_weights=True,
        cpu_linear=settings.cpu_linear if on_cpu else "torch",
        decode=settings.decode,
        prepack_sampling_weights=on_cpu and settings.prepack_sampling_weights,
        decode_attention=on_cpu and settings.decode_attention,
        lean_activations=on_cpu and settings.lean_activations,
        kernel_cache_capacity=settings.kernel_cache_capacity if on_cpu else None,
        release_heap=on_cpu and settings.release_heap,
        keep_cast_weights=on_cpu and settings.keep_cast_weights,
        release_cast_sources=on_cpu
        and settings.keep_cast_weights
        and settings.release_cast_sources,
    )


class RolloutEngine:
    """EngineSettings on one device: the contexts and calls the algorithms use (speed only:
    every piece computes what the straightforward path computes, tests/rollout)."""

    def __init__(self, settings: EngineSettings, device: torch.device | str) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.pieces = engine_pieces(settings, self.device)
        if self.pieces.kernel_cache_capacity is not None:
            bound_kernel_caches(self.pieces.kernel_cache_capacity)
        if self.pieces.decode_attention:
            register_decode_attention()
        if self.pieces.lean_activations:
            register_lean_attention()
        # Frozen weights' autocast copies, kept across this engine's phases (keep_cast_weights).
        self.cast_copies = None
        if self.pieces.keep_cast_weights:
            self.cast_copies = CastCopies(release_sources=self.pieces.release_cast_sources)
        self.static_decoder = None
        if self.pieces.decode != "dynamic":
            self.static_decoder = StaticDecoder(compile=self.pieces.decode == "compiled")

    @classmethod
    def straightforward(cls, device: torch.device | str) -> RolloutEngine:
        """transformers' generate through peft's unmerged layers, every row's prompt in every
        log-prob pass, no CPU piece: the path every fast one is checked against."""
        return cls(STRAIGHTFORWARD, device)

    @classmethod
    def for_model(cls, settings: EngineSettings | None, model: nn.Module) -> RolloutEngine:
        """An engine on the device `model`'s weights are on (None: the straightforward one)."""
        return cls(settings or STRAIGHTFORWARD, model_device(model))

    # --- contexts --------------------------------------------------------------------------

    def routed_shapes(
        self, model: nn.Module, phase: str, rows: int
    ) -> frozenset[tuple[int, int]] | None:
        """The (out, in) weight shapes of `model`'s float32 Linears that run in oneDNN during
        `phase` (sampling | passes) at about `rows` rows: all (None) for cpu_linear=onednn,
        none for torch, and for auto those where timing both said oneDNN was faster."""
        if self.pieces.cpu_linear == "onednn":
            return None
        if self.pieces.cpu_linear != "auto":
            return frozenset()
        prepack = self.pieces.prepack_sampling_weights
        return kernel_choice.CHOOSER.onednn_shapes(model, phase, rows, prepack_sampling=prepack)

    def decode_attention_pays(self, model: nn.Module, rows: int) -> bool:
        """Whether sampling switches `model`'s sdpa to medrl's decode attention: as
        decode_attention says, or for auto, where sampling runs in half precision (float32 steps
        stay on sdpa either way), as timing both at `rows` rows said."""
        setting = self.pieces.decode_attention
        if setting != "auto":
            return bool(setting)
        device_type = self.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        else:
            dtype = next((p.dtype for p in model.parameters()), torch.float32)
        if dtype not in (torch.bfloat16, torch.float16):
            return False
        return decode_attention.CHOOSER.medrl_wins(model, rows, dtype)

    @contextmanager
    def sampling(self, model: nn.Module, rows: int = 1) -> Iterator[None]:
        """Around generation (no gradients) of `rows` rows at a time: merged LoRA, frozen
        weights cast once under autocast, and on a CPU the decode attention and oneDNN
        Linears."""
        pieces = self.pieces
        with ExitStack() as stack:
            if pieces.merge_adapter:
                # Under autocast each merged weight is kept in autocast's dtype only (the
                # numbers autocast_weights would give it).
                dtype = autocast_dtype(self.device)
                release = pieces.release_cast_sources and dtype is not None
                stack.enter_context(merged_lora(model, dtype=dtype, release_pages=release))
            stack.enter_context(autocast_weights(model, self.device, self.cast_copies))
            if self.decode_attention_pays(model, rows):
                stack.enter_context(sampling_attention(model))
            # Decided on the weights as sampling sees them (merged, cast). A compiled decode
            # step leaves the products to inductor, which cannot lower the oneDNN route.
            if pieces.decode != "compiled":
                shapes = self.routed_shapes(model, "sampling", rows)
                prepack_rows = rows if pieces.prepack_sampling_weights else None
                stack.enter_context(onednn_linears(model, shapes=shapes, prepack_rows=prepack_rows))
            yield

    @contextmanager
    def passes(self, *models: nn.Module | None) -> Iterator[None]:
        """Around GRPO's reference and update passes of each given model (None is skipped):
        frozen weights cast once under autocast, and on a CPU oneDNN Linears and the lean
        attention and MLPs."""
        with ExitStack() as stack:
            for model in models:
                if model is None:
                    continue
                stack.enter_context(autocast_weights(model, self.device, self.cast_copies))
                shapes = self.routed_shapes(model, "passes", kernel_choice.PASS_ROWS)
                stack.enter_context(onednn_linears(model, shapes=shapes))
                stack.enter_context(lean_passes(model, self.pieces.lean_activations))
            yield

    def linears(self, model: nn.Module) -> Iterator[int]:
        """Around SFT's forward (its graph keeps the routed products, so the backward runs
        them too): on a CPU, float32 Linears in oneDNN; elsewhere nothing changes."""
        shapes = self.routed_shapes(model, "passes", kernel_choice.PASS_ROWS)
        return onednn_linears(model, shapes=shapes)

    def before_micro_batch(self) -> None:
        """Between update micro-batches: on a CPU with release_heap, the heap's free pages
        go back to the OS (medrl.utils.heap)."""
        if self.pieces.release_heap:
            release_free_heap()

    def decisions(self) -> list[str]:
        """What this process chose by measurement so far, for reports: every cpu_linear=auto
        timing (shared by the process's engines) and each compiled decode shape's compile
        seconds."""
        lines = [timing.describe() for timing in kernel_choice.CHOOSER.decisions.values()]
        lines += [timing.describe() for timing in decode_attention.CHOOSER.decisions.values()]
        if self.static_decoder is not None:
            for state in self.static_decoder.states.values():
                lines.append(state.describe())
        return lines

    # --- calls -----------------------------------------------------------------------------

    def generate(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompts: Sequence[str],
        settings: SamplingSettings,
        num_samples: int = 1,
        batch_size: int | None = None,
        generator_seed: int | None = None,
        timings: dict[str, float] | None = None,
        prompt_seeds: Sequence[int] | None = None,
    ) -> Rollout:
        """medrl.rollout.generation.sample_rollout under `sampling(model)`, with this
        engine's sampler (see there for the arguments)."""
        rows = (batch_size or len(prompts)) * num_samples
        with eval_mode(model), torch.no_grad(), self.sampling(model, rows):
            return sample_rollout(
                model,
                tokenizer,
                prompts,
                settings,
                sampler=self.pieces.sampler,
                num_samples=num_samples,
                batch_size=batch_size,
                generator_seed=generator_seed,
                timings=timings,
                prompt_seeds=prompt_seeds,
                static_decoder=self.static_decoder,
            )

    def logprobs(
        self,
        model: nn.Module,
        rollout: Rollout,
        rows: slice,
        temperature: float,
        entropy: bool = False,
        entropy_grad: bool = False,
    ):
        """completion_logprobs of `rollout`'s rows `rows`: rows of one group share their prompt,
        run once per call (and packed) where the engine says so; same numbers either way."""
        groups = rollout.group_index[rows] if self.pieces.shared_prompt_logprobs else None
        return completion_logprobs(
            model,
            rollout.prompt_ids[rows],
            rollout.prompt_mask[rows],
            rollout.completion_ids[rows],
            rollout.completion_mask[rows],
            temperature=temperature,
            return_entropy=entropy,
            prompt_groups=groups,
            pack=self.pieces.pack_completions,
            fused_head=self.pieces.fused_head,
            entropy_grad=entropy_grad,
        )


class UsesRolloutEngine:
    """For a LightningModule that samples or runs passes through an engine: `engine` is built
    from `engine_settings` on the module's device on first use (once Lightning has placed the
    model), and again if the module moves."""

    engine_settings: EngineSettings
    _engine: RolloutEngine | None = None

    @property
    def engine(self) -> RolloutEngine:
        device = self.device  # type: ignore[attr-defined]  (the LightningModule's)
        if self._engine is None or self._engine.device != device:
            self._engine = RolloutEngine(self.engine_settings, device)
        return self._engine


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: SamplingSettings,
    num_samples: int = 1,
    batch_size: int | None = None,
    generator_seed: int | None = None,
    engine: RolloutEngine | EngineSettings | None = None,
    timings: dict[str, float] | None = None,
    prompt_seeds: Sequence[int] | None = None,
) -> Rollout:
    """Generate `num_samples` completions for each rendered prompt with `engine` (a built
    engine, settings resolved for the model's device, or None: the straightforward engine).

    prompts:        complete prompt strings (e.g. from `medrl.prompts.render_prompt`).
    batch_size:     prompts per sampling call (each call makes batch_size * num_samples rows);
                    None = all prompts in one call. Greedy results do not depend on it; sampled
                    ones do, because the random stream is consumed in a different order.
    generator_seed: when given, sampling runs under a forked RNG seeded with it, so the result
                    is reproducible and the caller's global RNG state is left untouched.
    timings:        when given, receives the seconds of "prefill" and "decode" (medrl's sampler)
                    or of "decode" alone (transformers' generate, whose prefill is not separate).
    prompt_seeds:   one seed per prompt (medrl's sampler only): each prompt samples from its own
                    random stream, so its completions do not depend on the other prompts of the
                    call, on `batch_size`, or on the process it runs in.
    The model runs in eval mode (restored afterwards) under ``torch.no_grad()``; it may be a
    peft-wrapped model. Rows are prompt-major: rows [b*G:(b+1)*G] belong to prompts[b].
    """
    if not isinstance(engine, RolloutEngine):
        engine = RolloutEngine.for_model(engine, model)
    return engine.generate(
        model,
        tokenizer,
        prompts,
        settings,
        num_samples=num_samples,
        batch_size=batch_size,
        generator_seed=generator_seed,
        timings=timings,
        prompt_seeds=prompt_seeds,
    )
