"""The token log-probs of given completions under a policy (current, old or reference).

Three ways to run the forward pass, with the same result:

* full:   one forward over ``[prompt; completion]`` for every row;
* shared: rows that continue the same prompt (a GRPO group) run that prompt once; its KV cache
          (which carries gradients) is repeated for the rows and only the completions run after
          it. With G completions per prompt this does 1/G of the prompt work, forward and
          backward, and keeps 1/G of the prompt activations.
* packed: the shared layout without any padding. The micro-batch becomes one row: each distinct
          prompt's real tokens, then every completion's real tokens, under a tree-shaped
          attention mask (a token sees its own prompt and the earlier tokens of its own
          completion) with each token at its unpadded position. Completions of different
          lengths then cost their own length, not the longest one's.

Every way, logits are computed only at the positions that predict completion tokens and the
log-softmax is taken at the target ids in float32, a chunk of rows at a time, as
``logit[target] - logsumexp(logits)``: no full-vocabulary [N, C, V] log-softmax is ever built.

Shapes: N rows, P prompt width (left-padded), C completion width (right-padded), V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrl.rollout.decoding import real_token_positions
from medrl.rollout.fused_head import fused_head_supported, head_logprobs, hidden_states_at
from medrl.rollout.generation import model_device
from medrl.rollout.kv_cache import supports_preallocated_cache
from medrl.rollout.lean_passes import GQA_ATTENTION

# Budget for the [rows, C, V] float32 temporary of one log-softmax chunk when chunk_size is None:
# 2**24 elements = 64 MiB, small next to the model yet large enough that typical C * V fits a row.
_LOGSOFTMAX_CHUNK_ELEMENTS = 1 << 24
# Largest T x T of the packed layout (2**26, T = 8192): its boolean mask is then 64 MiB, the
# temporaries that build it a few times that, an eager float32 mask 256 MiB. A micro-batch
# with more real tokens takes the shared path.
_PACKED_MASK_ELEMENTS = 1 << 26


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution, H = -sum_v p_v log p_v with p = softmax(logits),
    in float32. logits [..., V] -> [...]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def completion_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_size: int | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    prompt_groups: Sequence[int] | torch.Tensor | None = None,
    pack: bool = False,
    fused_head: bool = False,
    entropy_grad: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_t | x, y_<t) of every completion token, [N, C] float32; 0 where masked.

    With `return_entropy`, also the entropy of each next-token distribution [N, C] (0 where
    masked), computed from the same logits chunk by chunk: detached for observability, or with
    gradients when `entropy_grad` (an entropy bonus in the loss; the full and shared paths then
    keep each chunk's softmax for the backward).

    Attention masks and position ids count only real tokens, so a left-padded row scores
    exactly as it would unpadded. Logits are divided by `temperature` (pass the sampling
    temperature: samples come from softmax(logits / T)) and gathered `chunk_size` rows at a
    time (None = as many rows as fit in about 64 MiB). Trailing columns that no row uses
    (every row ended before them) are not run through the model at all.

    prompt_groups: None runs every row's prompt (the full path). Otherwise one label per row
    [N]; rows with the same label must have identical prompt_ids and prompt_mask (checked) and
    share one prompt forward (the shared path).
    pack: with prompt_groups, run the packed layout where the model allows it
    (`takes_tree_mask`), every prompt has a real token, every completion mask is a run of ones
    then zeros (a Rollout's always is) and the micro-batch's real tokens T keep T x T within
    _PACKED_MASK_ELEMENTS; otherwise the shared path.
    fused_head: on the packed path, where the model's logits are a plain Linear of its hidden
    states (`fused_head_supported`), take the log-probs from the hidden states chunk by chunk
    (medrl.rollout.fused_head: no [K, V] logits kept for the backward; chunk_size is then
    that module's).

    Gradients flow when called outside ``torch.no_grad()``; the model's train/eval mode is the
    caller's choice. The result is on the model's device.
    """
    if prompt_ids.shape[1] < 1:
        raise ValueError("completion_logprobs needs at least one prompt token per row")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    device = model_device(model)
    width = completion_ids.shape[1]
    # Columns after every row's end change nothing (causal attention, masked): drop them.
    filled = completion_mask.bool().any(dim=0).nonzero()  # columns some row uses
    used = int(filled.max()) + 1 if filled.numel() else 1
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    completion_ids = completion_ids[:, :used].to(device)  # [N, c]
    completion_mask = completion_mask[:, :used].to(device)  # [N, c]
    groups = None
    if prompt_groups is not None:
        groups = torch.as_tensor(prompt_groups, dtype=torch.long, device=device)
    if groups is not None and pack and _packable(model, prompt_mask, completion_mask, groups):
        if fused_head and fused_head_supported(model):
            return _packed_fused_results(
                model,
                prompt_ids,
                prompt_mask,
                completion_ids,
                completion_mask,
                groups,
                width,
                temperature,
                return_entropy,
                entropy_grad,
            )
        logits = _packed_logits(
            model, prompt_ids, prompt_mask, completion_ids, completion_mask, groups
        )  # [K, V]
        return _packed_results(
            logits,
            completion_ids,
            completion_mask,
            width,
            chunk_size,
            temperature,
            return_entropy,
            entropy_grad,
        )
    if groups is None:
        parts = _full_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    else:
        parts = _shared_prompt_logits(
            model, prompt_ids, prompt_mask, completion_ids, completion_mask, groups
        )
    # parts: logits [N, c_i, V] for consecutive completion positions, together c of them.
    vocab = parts[0].shape[-1]
    rows = chunk_size or max(1, _LOGSOFTMAX_CHUNK_ELEMENTS // max(1, used * vocab))
    logp = _per_part(parts, completion_ids, rows, lambda x, t: _gather_logprobs(x, t, temperature))
    logp = _masked_to_width(logp, completion_mask, width)  # [N, C]
    if not return_entropy:
        return logp
    # Without gradients one row at a time: three [c, V] temporaries, whatever the batch.
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = _per_part(
            parts,
            completion_ids,
            rows if entropy_grad else 1,
            lambda x, _: token_entropy(x / temperature),
        )
    return logp, _masked_to_width(entropy, completion_mask, width)


def _masked_to_width(values: torch.Tensor, mask: torch.Tensor, width: int) -> torch.Tensor:
    """[N, c] -> [N, width]: 0 where mask is 0 and in the dropped columns on the right."""
    values = torch.where(mask.bool(), values, torch.zeros_like(values))
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


def _full_logits(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> list[torch.Tensor]:
    """[logits [N, C, V]]: one forward over [prompt; completion] per row."""
    width = completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+C]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [N, P+C]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=real_token_positions(attention_mask),
        logits_to_keep=width + 1,
        use_cache=False,
    ).logits  # [N, C+1, V]
    # The logit at position P-1+t predicts completion token t; the last one predicts nothing.
    return [logits[:, :-1]]


def _shared_prompt_logits(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    groups: torch.Tensor,
) -> list[torch.Tensor]:
    """[logits [N, 1, V] predicting token 0, logits [N, C-1, V] predicting tokens 1..C-1]."""
    first_rows, row_to_prompt = _group_representatives(groups)  # [U], [N]
    _check_same_prompts(prompt_ids, prompt_mask, first_rows, row_to_prompt)
    unique_ids, unique_mask = prompt_ids[first_rows], prompt_mask[first_rows]  # [U, P]
    out = model(
        input_ids=unique_ids,
        attention_mask=unique_mask,
        position_ids=real_token_positions(unique_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.cache
    if cache is None or cache.get_seq_length() != prompt_ids.shape[1]:
        # The model kept no cache (transformers drops it under activation checkpointing in
        # train mode): run every row's prompt instead, same numbers.
        return _full_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    # Indexing copies each prompt's keys / values to its rows; autograd sums their gradients.
    cache.batch_select_indices(row_to_prompt)  # [U, ...] -> [N, ...]
    first = out.logits[:, -1:][row_to_prompt]  # [N, 1, V]
    width = completion_ids.shape[1]
    if width == 1:
        return [first]
    # The last completion token predicts nothing: run tokens 0..C-2, each predicting the next.
    lengths = prompt_mask.long().sum(dim=1, keepdim=True)  # [N, 1] real prompt tokens
    positions = lengths + torch.arange(width - 1, device=lengths.device)  # [N, C-1]
    rest = model(
        input_ids=completion_ids[:, :-1],
        attention_mask=torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1),  # [N, P+C-1]
        position_ids=positions,
        cache=cache,
        use_cache=True,
    ).logits  # [N, C-1, V]; position t predicts completion token t+1
    return [first, rest]


def takes_tree_mask(model: nn.Module) -> bool:
    """Whether the model's attention takes a custom [1, 1, T, T] mask as it is: transformers'
    sdpa and eager implementations do, and so does medrl's GQA variant of sdpa (flash-attention
    kernels do not); every layer must attend fully (a sliding-window layer would apply the
    window on top of the mask)."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager", GQA_ATTENTION):
        return False
    return supports_preallocated_cache(model)  # the same test: no sliding-window layer


def _packable(
    model: nn.Module,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    groups: torch.Tensor,
) -> bool:
    """Packing needs prefix completion masks (later tokens would otherwise move), a real token
    in every prompt (its last one predicts each completion's first), a model that honours the
    mask, and a T x T within budget (T: each distinct prompt once, every completion's inputs)."""
    mask = completion_mask.long()
    if not torch.equal(mask.cummin(dim=1).values, mask) or not bool(prompt_mask.any(dim=1).all()):
        return False
    first_rows, _ = _group_representatives(groups)
    tokens = int(prompt_mask[first_rows].sum()) + int((mask.sum(dim=1) - 1).clamp(min=0).sum())
    return tokens * tokens <= _PACKED_MASK_ELEMENTS and takes_tree_mask(model)


@dataclass(frozen=True)
class PackedLayout:
    """One row holding a micro-batch: each distinct prompt's real tokens, then every
    completion's real tokens except its last (which predicts nothing).

    input_ids, position_ids: [1, T]; a completion token's position continues its prompt's.
    allowed:    [T, T] bool, True where query t may attend to key s: s <= t, and s is in t's
                own segment or in the prompt t's completion continues.
    predictors: [K] the position whose logits predict each completion token, in the row-major
                order of the completion mask (K = its sum): a prompt's last token predicts
                token 0 of each of its completions, completion input t predicts token t+1.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    predictors: torch.Tensor


def packed_layout(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    first_rows: torch.Tensor,
    row_to_prompt: torch.Tensor,
) -> PackedLayout:
    """The PackedLayout of N rows whose completion masks are prefixes (ones then zeros)."""
    ids, positions, segments, parents = [], [], [], []
    prompt_last: list[int] = []
    prompt_length: list[int] = []
    start = 0
    for segment, row in enumerate(first_rows.tolist()):
        tokens = prompt_ids[row][prompt_mask[row].bool()]  # [L] real prompt tokens
        ids.append(tokens)
        positions.append(torch.arange(len(tokens)))
        segments.append(torch.full((len(tokens),), segment))
        parents.append(segment)
        start += len(tokens)
        prompt_last.append(start - 1)
        prompt_length.append(len(tokens))
    predictors: list[torch.Tensor] = []
    lengths = completion_mask.long().sum(dim=1).tolist()  # [N] real completion tokens
    for row, (length, prompt) in enumerate(zip(lengths, row_to_prompt.tolist(), strict=True)):
        if length == 0:
            continue
        inputs = completion_ids[row, : length - 1].cpu()  # [n-1]
        ids.append(inputs)
        positions.append(prompt_length[prompt] + torch.arange(length - 1))
        segments.append(torch.full((length - 1,), len(parents)))
        parents.append(prompt)
        predictors.append(torch.tensor([prompt_last[prompt]]))
        predictors.append(start + torch.arange(length - 1))
        start += length - 1
    segment = torch.cat(segments)  # [T] segment of each packed token
    parent = torch.tensor(parents)[segment]  # [T] the prompt segment each token continues
    index = torch.arange(len(segment))
    causal = index.unsqueeze(1) >= index.unsqueeze(0)  # [T, T] key s <= query t
    related = (segment.unsqueeze(1) == segment.unsqueeze(0)) | (
        parent.unsqueeze(1) == segment.unsqueeze(0)
    )  # key in the query's own segment, or in the prompt the query's completion continues
    return PackedLayout(
        input_ids=torch.cat([i.cpu() for i in ids]).unsqueeze(0),
        position_ids=torch.cat(positions).unsqueeze(0),
        allowed=causal & related,
        predictors=torch.cat(predictors) if predictors else torch.zeros(0, dtype=torch.long),
    )


def _packed_inputs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    groups: torch.Tensor,
) -> dict[str, Any]:
    """The model's keyword arguments for one packed forward whose K outputs predict every
    completion token (row-major order of the mask)."""
    first_rows, row_to_prompt = _group_representatives(groups)  # [U], [N]
    _check_same_prompts(prompt_ids, prompt_mask, first_rows, row_to_prompt)
    layout = packed_layout(
        prompt_ids, prompt_mask, completion_ids, completion_mask, first_rows, row_to_prompt
    )
    device = model_device(model)
    allowed = layout.allowed.to(device)[None, None]  # [1, 1, T, T]
    # A float mask, as eager attention needs it and sdpa would convert it to (in every layer,
    # each layer then keeping its own copy for the backward): converted once, shared by all.
    dtype = next(model.parameters()).dtype
    allowed = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
    return dict(
        input_ids=layout.input_ids.to(device),
        attention_mask=allowed,
        position_ids=layout.position_ids.to(device),
        logits_to_keep=layout.predictors.to(device),
        use_cache=False,
    )


def _packed_logits(model: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """logits [K, V] predicting every completion token (row-major order of the mask)."""
    return model(**_packed_inputs(model, *args)).logits[0]  # [K, V]


def _packed_fused_results(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    groups: torch.Tensor,
    width: int,
    temperature: float,
    return_entropy: bool,
    entropy_grad: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """_packed_results' values from the final hidden states through head_logprobs: no [K, V]
    logits are kept for the backward (medrl.rollout.fused_head)."""
    inputs = _packed_inputs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, groups)
    hidden, head, onednn = hidden_states_at(model, **inputs)  # [1, K, H]
    real = completion_mask.bool()  # [N, c]
    logp, entropy = head_logprobs(hidden[0], head, completion_ids[real], temperature, onednn)
    spread = _spread(logp, real, width)
    if not return_entropy:
        return spread
    return spread, _spread(entropy if entropy_grad else entropy.detach(), real, width)


def _spread(values: torch.Tensor, real: torch.Tensor, width: int) -> torch.Tensor:
    """Packed values [K] -> [N, width] at the mask's real positions, 0 elsewhere."""
    return _masked_to_width(values.new_zeros(real.shape).masked_scatter(real, values), real, width)


def _packed_results(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    width: int,
    chunk_size: int | None,
    temperature: float,
    return_entropy: bool,
    entropy_grad: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (and entropies) [N, width] from packed logits [K, V]."""
    real = completion_mask.bool()  # [N, c]
    targets = completion_ids[real]  # [K]
    rows = chunk_size or max(1, _LOGSOFTMAX_CHUNK_ELEMENTS // max(1, logits.shape[-1]))
    # At least one chunk, so that no completion token still gives a result tied to the graph.
    logp = torch.cat(
        [
            _gather_logprobs(logits[k : k + rows], targets[k : k + rows], temperature)
            for k in range(0, max(1, len(targets)), rows)
        ]
    )  # [K]
    spread = _spread(logp, real, width)
    if not return_entropy:
        return spread
    # Entropies while the forward's activations are alive: as few positions at a time as
    # the other paths (one completion's width), so its [n, V] temporaries stay small.
    step = max(1, real.shape[1])
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = torch.cat(
            [
                token_entropy(logits[k : k + step] / temperature)
                for k in range(0, len(targets), step)
            ]
            or [logp.new_zeros(0)]
        )
    return spread, _spread(entropy.float(), real, width)


def _group_representatives(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each distinct label [U], each row's index into those [N])."""
    _, row_to_prompt = torch.unique(groups, return_inverse=True)  # [N] in 0..U-1
    count = int(row_to_prompt.max()) + 1
    rows = torch.arange(groups.numel(), device=groups.device)
    first = torch.full((count,), groups.numel(), dtype=torch.long, device=groups.device)
    first = first.scatter_reduce(0, row_to_prompt, rows, reduce="amin")  # [U]
    return first, row_to_prompt


def _check_same_prompts(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    first_rows: torch.Tensor,
    row_to_prompt: torch.Tensor,
) -> None:
    representative = first_rows[row_to_prompt]  # [N]
    same = torch.equal(prompt_ids, prompt_ids[representative]) and torch.equal(
        prompt_mask, prompt_mask[representative]
    )
    if not same:
        raise ValueError(
            "prompt_groups puts rows with different prompts in one group; pass one label per "
            "distinct prompt (e.g. Rollout.group_index) or None"
        )


def _per_part(parts, targets: torch.Tensor, rows: int, fn) -> torch.Tensor:
    """fn(logits chunk [n, c, V], targets [n, c]) -> [n, c], over row chunks of every part,
    reassembled into [N, C] (parts cover consecutive completion positions)."""
    columns, start = [], 0
    for logits in parts:
        stop = start + logits.shape[1]
        part_targets = targets[:, start:stop]  # [N, c]
        columns.append(
            torch.cat(
                [
                    fn(logits[r : r + rows], part_targets[r : r + rows])
                    for r in range(0, logits.shape[0], rows)
                ],
                dim=0,
            )
        )
        start = stop
    return torch.cat(columns, dim=1) if len(columns) > 1 else columns[0]


def _gather_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log_softmax(logits / T) at `targets`: [n, C, V], [n, C] -> [n, C] float32.

    Computed as ``x[target] - logsumexp(x)``, equal to the gathered log_softmax, because
    log_softmax would materialize (and, with gradients, keep) a second [n, C, V] tensor.
    """
    scaled = logits.float()  # [n, C, V]; no copy when the model is already float32
    if temperature != 1.0:
        scaled = scaled / temperature
    picked = scaled.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [n, C]
    return picked - torch.logsumexp(scaled, dim=-1)  # [n, C]
