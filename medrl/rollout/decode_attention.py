"""Attention for one-token decoding steps, registered with transformers as "medrl_decode".

PyTorch's CPU scaled_dot_product_attention kernel is slow for a single bfloat16 query token:
decoding 4 prompts x 4 samples x 64 tokens of SmolLM2-135M under bf16 autocast took 9.1-10.6 s
with it and 6.1-6.7 s with two batched matmuls and a float32 softmax (2 threads, this 2-core
CPU, four runs each). Here a half-precision step (half weights, or autocast) with one query
token runs those matmuls, the query's grouped heads side by side against their shared
key/value head (no copy of the cache per query head). Every other call is transformers' sdpa:
prefill, several tokens, training, and float32, where this path showed no gain (7.8 s against
8.8 s in one run, within the 1.5 s spread between runs).

Whether it pays depends on the CPU: on an AMD EPYC Zen 3 (AVX2, no AVX-512 bfloat16) the same
bfloat16 step of 16 rows x 9 heads over 100-200 positions took 1.2-2.3 ms here against sdpa's
0.26-0.40 ms. With `engine.decode_attention: auto` the engine times both on the run's rows,
heads, head size and dtype (`DecodeAttentionChooser`, over TIMING_LENGTH cached positions;
once per CPU kind, the decision stored by medrl.rollout.decision_store) and switches only where
medrl's was faster.

sampling_attention(model) switches a model that uses "sdpa" to it for a block (rollouts only,
after register_decode_attention(): medrl.rollout.engine does both, on a CPU);
attention_implementation(model, name) does the same for any registered implementation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from medrl.rollout.decision_store import stored_or_measured

NAME = "medrl_decode"
TIMING_LENGTH = 256  # cached positions of the timed step: a prompt plus a completion's order
TIMING_REPEATS = 5

log = logging.getLogger(__name__)


def decode_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query [b, H, q, d], key/value [b, K, L, d] (H = K * groups), attention_mask: sdpa's
    (bool [b, 1, q, L], True = attend, or None) -> (output [b, q, H, d], None), like sdpa."""
    # Only half precision pays (see the module docstring); autocast leaves the rotated query
    # and key in float32, so the value's dtype and autocast itself tell.
    half = value.dtype != torch.float32 or torch.is_autocast_enabled(query.device.type)
    one_token = query.shape[2] == 1 and not module.training and half
    extras = kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None
    if not one_token or extras:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    grouped = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # [b, K, g, d]
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scale  # [b, K, g, L]
    if attention_mask is not None:
        allowed = attention_mask[:, :, -1:, -key.shape[2] :]  # [b, 1, 1, L]
        if allowed.dtype == torch.bool:
            scores = scores.masked_fill(~allowed, float("-inf"))
        else:  # an additive float mask
            scores = scores + allowed.float()
    weights = torch.softmax(scores, dim=-1).to(value.dtype)  # [b, K, g, L]
    output = torch.matmul(weights, value)  # [b, K, g, d]
    return output.reshape(rows, 1, heads, dim), None


def register_decode_attention() -> None:
    """Make "medrl_decode" known to transformers, once (the engine calls it when it is built
    for a CPU; nothing is registered at import)."""
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, decode_attention_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)


@contextmanager
def sampling_attention(model: nn.Module) -> Iterator[bool]:
    """Inside the block, every config of `model` that selects "sdpa" selects "medrl_decode"
    instead (yields True if any did); other attention implementations are left alone."""
    register_decode_attention()  # idempotent: callers outside an engine get it too
    with attention_implementation(model, NAME) as switched:
        yield switched


@contextmanager
def attention_implementation(model: nn.Module, name: str) -> Iterator[bool]:
    """Inside the block, every config of `model` that selects "sdpa" selects `name` (an
    implementation registered with transformers' AttentionInterface) instead; yields True if
    any did. Other attention implementations are left alone; all are back on exit."""
    configs = _configs(model)  # parents before their sub-configs
    originals = [config._attn_implementation for config in configs]
    try:
        for config, original in zip(configs, originals, strict=True):
            if original == "sdpa":
                config._attn_implementation = name
        # transformers' setter also sets a config's sub-configs: put back those not on sdpa.
        for config, original in zip(configs, originals, strict=True):
            if original != "sdpa":
                config._attn_implementation = original
        yield "sdpa" in originals
    finally:
        for config, original in zip(configs, originals, strict=True):
            config._attn_implementation = original


def _configs(model: nn.Module) -> list[Any]:
    """The distinct config objects of the model's modules (a composite model has several)."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@dataclass(frozen=True)
class DecodeAttentionTiming:
    """Seconds of one decode step's attention (one layer) in sdpa and in medrl's."""

    rows: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    sdpa_seconds: float
    medrl_seconds: float
    stored: bool = False  # read from the machine's DecisionStore, timed by an earlier process

    @property
    def medrl_wins(self) -> bool:
        return self.medrl_seconds < self.sdpa_seconds

    def describe(self) -> str:
        winner = "medrl" if self.medrl_wins else "sdpa"
        return (
            f"decode_attention=auto, {self.dtype} ({self.rows} rows, {self.heads} heads / "
            f"{self.kv_heads} key-value heads of {self.head_dim}, {TIMING_LENGTH} positions): "
            f"{winner} (sdpa {1e6 * self.sdpa_seconds:.0f} us, medrl "
            f"{1e6 * self.medrl_seconds:.0f} us per layer)"
            + (" [stored: timed by an earlier process on this CPU kind]" if self.stored else "")
        )


def time_decode_attention(
    rows: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype
) -> DecodeAttentionTiming:
    """Both attentions of a one-token step on random [rows, heads, 1, head_dim] queries over
    TIMING_LENGTH cached positions (the first eighth masked, as left padding is), each the
    best of TIMING_REPEATS after a warm-up call."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(rows, heads, 1, head_dim, generator=generator).to(dtype)
    key, value = (
        torch.randn(rows, kv_heads, TIMING_LENGTH, head_dim, generator=generator).to(dtype)
        for _ in range(2)
    )
    mask = torch.ones(rows, 1, 1, TIMING_LENGTH, dtype=torch.bool)
    mask[..., : TIMING_LENGTH // 8] = False
    module = SimpleNamespace(training=False, num_key_value_groups=heads // kv_heads)
    seconds = []
    for attention in (sdpa_attention_forward, decode_attention_forward):
        attention(module, query, key, value, mask)  # warm-up
        best = float("inf")
        for _ in range(TIMING_REPEATS):
            start = time.perf_counter()
            attention(module, query, key, value, mask)
            best = min(best, time.perf_counter() - start)
        seconds.append(best)
    name = str(dtype).removeprefix("torch.")
    return DecodeAttentionTiming(rows, heads, kv_heads, head_dim, name, *seconds)


def attention_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """(heads, key-value heads, head size) from the model's (text) config; None if unknown."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    heads = getattr(config, "num_attention_heads", None)
    if not heads:
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


class DecodeAttentionChooser:
    """decode_attention=auto: whether medrl's attention beats sdpa for a run's half-precision
    decode steps, timed once per (rows, heads, key-value heads, head size, dtype, threads)."""

    def __init__(self, persist: bool = False) -> None:
        self.decisions: dict[tuple, DecodeAttentionTiming] = {}
        self.persist = persist  # keep decisions per machine kind (medrl.rollout.decision_store)

    def medrl_wins(self, model: nn.Module, rows: int, dtype: torch.dtype) -> bool:
        """False where the model's attention shape cannot be read (sdpa stays)."""
        shape = attention_shape(model)
        if shape is None:
            return False
        key = (rows, *shape, dtype, torch.get_num_threads())
        if key not in self.decisions:
            self.decisions[key] = self._decide(key, rows, shape, dtype)
            log.info(self.decisions[key].describe())
        return self.decisions[key].medrl_wins

    def _decide(self, key, rows, shape, dtype) -> DecodeAttentionTiming:
        """The stored decision for `key` on this machine kind, else a new timing (stored)."""

        def measure() -> DecodeAttentionTiming:
            return time_decode_attention(rows, *shape, dtype)

        if not self.persist:
            return measure()
        return stored_or_measured(
            ("decode_attention", *map(str, key)),
            measure,
            lambda timing: {k: v for k, v in asdict(timing).items() if k != "stored"},
            lambda stored: DecodeAttentionTiming(**{**stored, "stored": True}),
        )


# One per process, its decisions stored per machine kind, as medrl.rollout.kernel_choice.CHOOSER.
CHOOSER = DecodeAttentionChooser(persist=True)
