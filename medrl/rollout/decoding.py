"""medrl's sampler: each prompt is prefilled once for its G samples, finished rows leave the batch.

`transformers`' generate runs the prompt of every sample through the model (G prefills of one
prompt) and keeps decoding rows that already emitted an eos until the last row ends. Here:

1. prefill: one forward over the B distinct prompts (or over all B*G rows with
   share_prompt=False, the straightforward path the tests compare against) fills the KV cache;
2. the cache rows and the last-position logits are repeated G times (prompt-major rows);
3. decode: one token per active row per forward, appended to a preallocated KV cache in place
   (medrl.rollout.kv_cache); a row whose token is an eos is removed from the batch and from the
   cache, so later forwards only pay for rows still writing.

Sampling is exactly softmax(warped logits) with transformers' own temperature / top-k / top-p /
min-p warpers (in generate's order), or argmax when greedy. Draws invert the cumulative
distribution (one uniform per row) rather than calling torch.multinomial, so a seed gives other
samples than transformers' generate, from the same distribution. Rows are independent of each
other except through the shared random stream, so the same seed gives the same samples whether
prompts are shared or not (the tests check it). With `prompt_seeds`, each prompt draws from its
own stream (PromptStreams): a prompt's samples then do not depend on which other prompts share
its batch, or its rank in a multi-process run.

Under FSDP and DeepSpeed ZeRO-3 (medrl.sharding.weights_sharded) every forward gathers each
layer's weights from all processes, so every process must run as many forwards as the others:
with `lockstep`, a process whose rows have all ended keeps running a one-token filler forward
until every process's rows have.

Shapes: b prompts, G samples each, N = b*G rows, P prompt width, C completion width, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from medrl import distributed
from medrl.rollout.kv_cache import preallocated_cache, supports_preallocated_cache
from medrl.rollout.settings import SamplingSettings
from medrl.rollout.static_decode import (
    StaticDecoder,
    bucketed_capacity,
    load_prefill,
    static_decode_loop,
)
from medrl.utils.timing import timed


def real_token_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [rows, L] for an attention mask [rows, L]: real tokens count 0, 1, ...;
    left padding (masked, so its positions never matter) gets 0."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def logits_warpers(settings: SamplingSettings) -> Any:
    """transformers' LogitsProcessorList for `settings` (empty when greedy), in the order
    generate applies them: temperature, top-k, top-p, min-p."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if settings.greedy:
        return warpers
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k > 0:
        warpers.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))
    if settings.min_p > 0.0:
        warpers.append(MinPLogitsWarper(settings.min_p))
    return warpers


class PromptStreams:
    """One random stream per prompt: the uniforms of sampling rows drawn from their prompt's.

    seeds: one per prompt; rows are prompt-major, `num_samples` per prompt. Each token, the
    active rows of prompt i draw their uniforms, in row order, from generator i. A row's draws
    therefore depend only on its own prompt's seed and rows (which of them are still writing),
    never on the other prompts of the batch.
    """

    def __init__(self, seeds: Sequence[int], num_samples: int, device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.num_samples = num_samples
        self.device = device

    def uniforms(self, rows: torch.Tensor) -> torch.Tensor:
        """u [n, 1] float64 in [0, 1) for the active `rows` [n] (indices into all N rows)."""
        prompts = (rows // self.num_samples).tolist()
        u = torch.empty((len(prompts), 1), dtype=torch.float64, device=self.device)
        start = 0
        while start < len(prompts):  # rows of one prompt are contiguous
            stop = start
            while stop < len(prompts) and prompts[stop] == prompts[start]:
                stop += 1
            generator = self.generators[prompts[start]]
            u[start:stop] = torch.rand(
                (stop - start, 1), generator=generator, dtype=torch.float64, device=self.device
            )
            start = stop
        return u


def pick_tokens(
    logits: torch.Tensor,
    settings: SamplingSettings,
    warpers: Any,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next token of every row: logits [n, V] float32 -> ids [n] (argmax, or one sample).

    uniforms [n, 1] (optional): the draws to invert; None draws them from the global RNG."""
    if settings.greedy:
        return logits.argmax(dim=-1)
    scores = warpers(None, logits)  # [n, V]; transformers' warpers ignore input_ids
    return sample_categorical(torch.softmax(scores, dim=-1), uniforms)


def token_picker(
    settings: SamplingSettings, streams: PromptStreams | None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """pick(logits [n, V], rows [n]) -> ids [n]: `pick_tokens` for those rows, their draws
    taken from the per-prompt `streams` in row order (None: the global RNG). Both decode loops
    (this module's and medrl.rollout.static_decode's) pick through it, so they draw alike."""
    warpers = logits_warpers(settings)

    def pick(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        uniforms = None if streams is None or settings.greedy else streams.uniforms(rows)
        return pick_tokens(logits, settings, warpers, uniforms)

    return pick


def sample_categorical(probs: torch.Tensor, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per row from probs [n, V] -> ids [n], by inverting the cumulative distribution.

    The same distribution as ``torch.multinomial(probs, 1)``, which on a CPU draws an
    exponential variate for every vocabulary entry (about 19 ms for 16 x 49k, 40x this). A
    zero-probability token (cut by top-k / top-p / min-p) is never drawn: its cumulative value
    equals its predecessor's, and the search returns the first entry strictly above u. The
    cumulative sum is float64, so tail tokens keep their probability over a 150k vocabulary.
    """
    cdf = probs.double().cumsum(dim=-1)  # [n, V]
    total = cdf[:, -1:].contiguous()  # [n, 1]
    if not bool((torch.isfinite(total) & (total > 0)).all()):
        raise ValueError("cannot sample: a row's probabilities are NaN, infinite or all zero")
    if uniforms is None:
        uniforms = torch.rand((probs.shape[0], 1), device=probs.device, dtype=cdf.dtype)
    u = uniforms.to(cdf.dtype) * total  # [n, 1]
    picked = torch.searchsorted(cdf, u, right=True)  # [n, 1]
    # u < total, so only rounding could reach V: cap at the row's last token that can be drawn,
    # the first entry where the cumulative sum reaches its total.
    last = torch.searchsorted(cdf, total)  # [n, 1]
    return torch.minimum(picked, last).squeeze(1)


def decode(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    num_samples: int,
    settings: SamplingSettings,
    eos_ids: Sequence[int],
    pad_id: int,
    share_prompt: bool = True,
    timings: dict[str, float] | None = None,
    prompt_seeds: Sequence[int] | None = None,
    lockstep: bool = False,
    static_decoder: StaticDecoder | None = None,
) -> torch.Tensor:
    """Raw completion ids [b*G, C] for left-padded prompts [b, P] (on the model's device).

    Rows are prompt-major (rows [i*G:(i+1)*G] continue prompt i). A row holds its tokens up to
    and including its first eos, then pad_id. C is the longest row (at most max_new_tokens).
    The caller provides no_grad and eval mode. `timings` (when given) receives the seconds
    spent in "prefill" and "decode". `prompt_seeds` (one per prompt): sample from per-prompt
    streams (PromptStreams) instead of the global RNG. `lockstep`: run as many forwards as
    every other process (a sharded model; see the module docstring). `static_decoder`: decode
    in static-shape steps, compiled or not (medrl.rollout.static_decode), where the model's
    cache allows it and the weights are not sharded; otherwise the loop below.
    """
    device = prompt_ids.device
    streams = None
    if prompt_seeds is not None:
        if len(prompt_seeds) != prompt_ids.shape[0]:
            raise ValueError(f"{len(prompt_seeds)} prompt_seeds for {prompt_ids.shape[0]} prompts")
        streams = PromptStreams(prompt_seeds, num_samples, device)
    static = static_decoder is not None and not lockstep and supports_preallocated_cache(model)
    with timed(timings, "prefill"):
        # The static path copies the prefill into its own cache: the prompt's width suffices.
        capacity = prompt_ids.shape[1] + (0 if static else settings.max_new_tokens)
        logits, cache, mask = _prefill(
            model, prompt_ids, prompt_mask, num_samples, share_prompt, capacity
        )
    pick = token_picker(settings, streams)
    with timed(timings, "decode"):
        if static:
            return _static_decode(
                static_decoder, model, logits, cache, mask, settings, eos_ids, pad_id, pick
            )
        return _decode_loop(
            model, logits, cache, mask, settings, eos_ids, pad_id, device, pick, lockstep
        )


def _static_decode(
    decoder: StaticDecoder,
    model: nn.Module,
    logits: torch.Tensor,
    cache: Any,
    mask: torch.Tensor,
    settings: SamplingSettings,
    eos_ids: Sequence[int],
    pad_id: int,
    pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The decode of `_decode_loop` in static-shape steps (medrl.rollout.static_decode): the
    same picks from the same draws, every row running every step."""
    rows, width = mask.shape
    capacity = bucketed_capacity(width, settings.max_new_tokens)
    dtype = cache.layers[0].keys.dtype
    state = decoder.state(model, rows, capacity, dtype, logits.device)
    load_prefill(state, cache, mask)
    return static_decode_loop(state, logits, mask, settings, eos_ids, pad_id, pick)


def _prefill(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    num_samples: int,
    share_prompt: bool,
    capacity: int,
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """(last-position logits [N, V] float32, KV cache of N rows, attention mask [N, P]).

    The cache holds `capacity` positions per row, appended in place (medrl.rollout.kv_cache),
    where the model allows it; otherwise the model's own cache."""
    if not share_prompt:  # every sample runs its own copy of the prompt
        prompt_ids = prompt_ids.repeat_interleave(num_samples, dim=0)  # [N, P]
        prompt_mask = prompt_mask.repeat_interleave(num_samples, dim=0)  # [N, P]
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=real_token_positions(prompt_mask),
        cache=preallocated_cache(capacity) if supports_preallocated_cache(model) else None,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1].float()  # [rows, V]
    cache = out.cache
    if share_prompt and num_samples > 1:
        cache.batch_repeat_interleave(num_samples)  # [b, ...] -> [N, ...], prompt-major
        logits = logits.repeat_interleave(num_samples, dim=0)  # [N, V]
        prompt_mask = prompt_mask.repeat_interleave(num_samples, dim=0)  # [N, P]
    return logits, cache, prompt_mask


def _decode_loop(
    model: nn.Module,
    logits: torch.Tensor,
    cache: Any,
    mask: torch.Tensor,
    settings: SamplingSettings,
    eos_ids: Sequence[int],
    pad_id: int,
    device: torch.device,
    pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lockstep: bool = False,
) -> torch.Tensor:
    """Sample until every row ended or max_new_tokens; finished rows leave the batch. With
    `lockstep`, until every row of every process ended (this process's rows idle meanwhile)."""
    rows = logits.shape[0]
    eos = torch.tensor(list(eos_ids), device=device)
    tokens = torch.full((rows, settings.max_new_tokens), pad_id, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # [n] the rows still writing
    next_position = mask.long().sum(dim=1)  # [n] position of each active row's next token
    width = 0
    finished = False  # every row of this process has ended
    for step in range(settings.max_new_tokens):
        if not finished:
            chosen = pick(logits, active)  # [n]
            tokens[active, step] = chosen
            width = step + 1
            ended = torch.isin(chosen, eos)  # [n]
            finished = bool(ended.all())
        if step + 1 == settings.max_new_tokens or _all_finished(finished, lockstep):
            break
        if finished:  # other processes still decode: their forwards need this one's shards
            _filler_forward(model, pad_id, device)
            continue
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)  # [n'] positions within the active batch
            cache.batch_select_indices(keep)
            active, chosen = active[keep], chosen[keep]
            mask, next_position = mask[keep], next_position[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)  # [n, P+step+1]
        out = model(
            input_ids=chosen.unsqueeze(1),
            attention_mask=mask,
            position_ids=next_position.unsqueeze(1),
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1].float()  # [n, V]
        next_position = next_position + 1
    return tokens[:, :width]


def _all_finished(finished: bool, lockstep: bool) -> bool:
    """This process is done; with `lockstep`, every process is (a collective)."""
    if not lockstep:
        return finished
    still_decoding = distributed.all_reduce_sum(torch.tensor([0.0 if finished else 1.0]))
    return float(still_decoding) == 0.0


def _filler_forward(model: nn.Module, pad_id: int, device: torch.device) -> None:
    """One forward of one pad token, without a cache: its output is not used."""
    ids = torch.full((1, 1), pad_id, dtype=torch.long, device=device)  # [1, 1]
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
