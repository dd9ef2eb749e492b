"""Decoding as one static-shape step, compiled where that pays (the approach of PyTorch's gpt-fast).

medrl's default decode loop (medrl.rollout.decoding) removes finished rows and attends to a
growing view of its KV cache: every token's forward has new shapes, so it cannot be compiled
and pays per-operation overhead at every step (at 16 rows of a 135M model most of a step's
time). Here every forward of a rollout has the same shapes:

- all N rows run every step; a finished row feeds the pad token and its output is ignored
  (its tokens after the eos stay pad, as in the default loop);
- the KV cache is a transformers StaticCache of `capacity` positions (the prompt width plus
  max_new_tokens, rounded up to CAPACITY_STEP so that rollouts with nearby prompt widths share
  one shape), written in place at the next position;
- the attention mask is a [N, capacity] tensor updated in place (prompt padding and the
  positions not yet written masked).

One StaticDecodeState per (rows, capacity, dtype, device) holds the cache, the mask and the
step function, compiled once with torch.compile (dynamic=False) when `compile` is set: a run
compiles once per shape it meets, not per rollout. Compilation seconds are recorded in the
state (`compile_seconds`) and logged.

Sampling is unchanged: the same `pick_tokens` on the active rows' logits with the same random
draws (uniforms for the active rows only, in row order), so the same distribution; logits
differ from the default loop's only by float rounding (another batch shape, masked cache
positions), which the tests bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

CAPACITY_STEP = 64


def bucketed_capacity(prompt_width: int, max_new_tokens: int, step: int = CAPACITY_STEP) -> int:
    """prompt_width + max_new_tokens rounded up to a multiple of `step`."""
    needed = prompt_width + max_new_tokens
    return -(-needed // step) * step


@dataclass
class StaticDecodeState:
    """The persistent pieces of one decode shape: cache, mask and step function."""

    rows: int
    capacity: int
    cache: Any  # transformers StaticCache
    mask: torch.Tensor  # [rows, capacity] long, 1 = attend
    step: Callable[..., torch.Tensor]
    compiled: bool
    compile_seconds: float | None = None
    steps_run: int = 0

    def describe(self) -> str:
        kind = "compiled" if self.compiled else "static (eager)"
        compiled = (
            f", compiled in {self.compile_seconds:.1f} s"
            if self.compile_seconds is not None
            else ""
        )
        return (
            f"decode={kind}: {self.rows} rows x {self.capacity} positions, "
            f"{self.steps_run} steps{compiled}"
        )


def _step_function(model: nn.Module) -> Callable[..., torch.Tensor]:
    def step(
        ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """ids [N, 1], positions [N, 1], mask [N, capacity] -> last logits [N, V] float32."""
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        return out.logits[:, -1].float()

    return step


class StaticDecoder:
    """StaticDecodeStates by shape, for one model (see the module docstring)."""

    def __init__(self, compile: bool) -> None:
        self.compile = compile
        self.states: dict[tuple, StaticDecodeState] = {}

    def state(
        self, model: nn.Module, rows: int, capacity: int, dtype: torch.dtype, device: torch.device
    ) -> StaticDecodeState:
        key = (id(model), rows, capacity, dtype, device)
        if key not in self.states:
            from transformers import StaticCache

            step = _step_function(model)
            if self.compile:
                step = torch.compile(step, dynamic=False)
            self.states[key] = StaticDecodeState(
                rows=rows,
                capacity=capacity,
                cache=StaticCache(config=model.config, max_cache_len=capacity),
                mask=torch.zeros((rows, capacity), dtype=torch.long, device=device),
                step=step,
                compiled=self.compile,
            )
        return self.states[key]


def load_prefill(state: StaticDecodeState, prefill_cache: Any, prompt_mask: torch.Tensor) -> None:
    """Copy a prefilled cache of N rows and P positions (medrl.rollout.kv_cache, after its
    rows were repeated for the samples) into the static cache, set its length to P and the
    mask to the prompt's."""
    width = prompt_mask.shape[1]
    for static_layer, layer in zip(state.cache.layers, prefill_cache.layers, strict=True):
        keys, values = layer.keys, layer.values  # [N, H, P, D]
        if not static_layer.is_initialized:
            static_layer.lazy_initialization(keys, values)
        static_layer.keys[:, :, :width].copy_(keys)
        static_layer.values[:, :, :width].copy_(values)
        static_layer.cumulative_length.fill_(width)
    state.mask.zero_()
    state.mask[:, :width].copy_(prompt_mask)


def static_decode_loop(
    state: StaticDecodeState,
    logits: torch.Tensor,
    prompt_mask: torch.Tensor,
    settings: Any,
    eos_ids: Sequence[int],
    pad_id: int,
    pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Tokens [N, max_new_tokens] (pad after each row's eos), cut to the longest row.

    logits [N, V]: the prefill's last-position logits; prompt_mask [N, P] as loaded by
    `load_prefill`. pick(logits [n, V], active rows [n]) -> tokens [n]: the sampler's choice for
    the active rows (their uniforms drawn in row order, as in the default loop)."""
    rows, width = prompt_mask.shape
    device = logits.device
    eos = torch.tensor(list(eos_ids), device=device)
    tokens = torch.full((rows, settings.max_new_tokens), pad_id, dtype=torch.long, device=device)
    active = torch.ones(rows, dtype=torch.bool, device=device)
    positions = prompt_mask.long().sum(dim=1, keepdim=True)  # [N, 1] next token's position
    feed = torch.full((rows, 1), pad_id, dtype=torch.long, device=device)
    used = 0
    for step in range(settings.max_new_tokens):
        index = active.nonzero().squeeze(1)  # [n]
        chosen = pick(logits[index], index)  # [n]
        tokens[index, step] = chosen
        used = step + 1
        active[index[torch.isin(chosen, eos)]] = False
        if step + 1 == settings.max_new_tokens or not bool(active.any()):
            break
        feed.fill_(pad_id)
        feed[index, 0] = chosen  # finished rows feed pad; their logits are never read
        state.mask[:, width + step] = 1
        logits = _run_step(state, feed, positions)
        positions += 1
    return tokens[:, :used]


def _run_step(state: StaticDecodeState, feed: torch.Tensor, positions: torch.Tensor):
    start = time.perf_counter()
    logits = state.step(feed, positions, state.mask, state.cache)
    if state.compiled and state.compile_seconds is None:  # the first call compiled the step
        state.compile_seconds = time.perf_counter() - start
        log.info(
            "static decode step compiled for %d rows x %d positions in %.1f s",
            state.rows,
            state.capacity,
            state.compile_seconds,
        )
    state.steps_run += 1
    return logits
