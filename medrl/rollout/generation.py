"""Batched sampling of completions: the Rollout that GRPO scores and evaluation parses.

`sample_rollout` serves both GRPO rollouts (G samples per prompt) and evaluation (greedy, one
each), through transformers' generate or medrl's sampler (medrl.rollout.decoding); callers go
through the engine (medrl.rollout.engine: `generate`, `RolloutEngine.generate`), which wraps it
in its sampling context (merged LoRA, CPU pieces). medrl.rollout.logprobs takes the log-probs.

Shapes: B prompts, G samples per prompt, N = B*G rows (prompt-major), P prompt length,
C completion length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrl import distributed
from medrl.rollout.decoding import decode
from medrl.rollout.settings import SAMPLERS, SamplingSettings
from medrl.rollout.static_decode import StaticDecoder
from medrl.sharding import root_weights_gathered, weights_sharded
from medrl.utils.timing import timed


@dataclass
class Rollout:
    """One batch of generations; rows [b*G:(b+1)*G] are the G samples of prompt b.

    prompt_ids / prompt_mask:          [N, P] left-padded with the pad id (mask 0 on padding).
    completion_ids / completion_mask:  [N, C] right-padded; the mask is 1 on generated tokens up
                                       to and including the first eos, 0 after (ids there are
                                       the pad id).
    texts:        decoded completions (special tokens, hence the eos, skipped).
    num_tokens:   completion_mask row sums (the eos counts as a token).
    truncated:    no eos within max_new_tokens.
    group_index:  the index of each row's prompt in the `prompts` given to `generate`.
    All tensors are on the CPU.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    num_tokens: list[int]
    truncated: list[bool]
    group_index: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def generation_kwargs(settings: SamplingSettings) -> dict[str, Any]:
    """The `model.generate` keyword arguments that implement `settings`.

    Every sampling knob is set explicitly, so the model's generation_config (Qwen3 ships
    top_k=20, temperature=0.6) never changes what `settings` says.
    """
    if settings.greedy:
        return {"do_sample": False, "max_new_tokens": settings.max_new_tokens}
    return {
        "do_sample": True,
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        # None rather than absent: an absent key would be filled from the model's config.
        "min_p": settings.min_p if settings.min_p > 0 else None,
    }


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """The tokenizer's eos id followed by any other eos ids in the model's generation_config.

    Qwen3 checkpoints list both ``<|im_end|>`` and ``<|endoftext|>``; a completion ends at either.
    """
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates.extend(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    for candidate in candidates:
        if candidate is not None and int(candidate) not in ids:
            ids.append(int(candidate))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config defines an eos")
    return ids


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of already-rendered prompts, without adding special tokens twice.

    Chat templates (Qwen3, SmolLM2, Llama 3) write their special tokens into the prompt text,
    so tokenizing with ``add_special_tokens=True`` would double Llama 3's ``<|begin_of_text|>``.
    Tokenizers that prepend a BOS by default still get one when the prompt lacks it (the plain
    template on a base Llama), so a prompt always starts the way the model was trained.
    """
    ids = [list(seq) for seq in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    bos = _default_bos(tokenizer)
    if bos is not None:
        ids = [seq if seq[:1] == [bos] else [bos, *seq] for seq in ids]
    for prompt, seq in zip(prompts, ids, strict=True):
        if not seq:
            raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    return ids


def _default_bos(tokenizer: Any) -> int | None:
    """The BOS id when `tokenizer` adds one by default, else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    return bos if with_special[:1] == [bos] and bare[:1] != [bos] else None


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, P], mask [N, P]) with every sequence right-aligned, P = the longest length."""
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [N, P]
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [N, P]
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def completion_mask_from_eos(
    completion_ids: torch.Tensor, eos_ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [N, C], has_eos [N]): mask is 1 up to and including each row's first eos.

    Rows without an eos keep every position: generation only stops before max_new_tokens once
    every row has ended, so such a row ran to the limit.
    """
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_ids), dtype=completion_ids.dtype))
    has_eos = is_eos.any(dim=1)  # [N]
    # Index of the first eos; rows without one get C so the mask covers the whole row.
    width = completion_ids.shape[1]
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), width)  # [N]
    positions = torch.arange(width).unsqueeze(0)  # [1, C]
    mask = (positions <= first.unsqueeze(1)).long()  # [N, C]
    return mask, has_eos


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own previous mode.

    Restoring per module (not ``model.train(was_training)``) keeps mixed states intact, e.g. a
    frozen submodule deliberately left in eval mode inside a training model.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def sample_rollout(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: SamplingSettings,
    sampler: str,
    num_samples: int = 1,
    batch_size: int | None = None,
    generator_seed: int | None = None,
    timings: dict[str, float] | None = None,
    prompt_seeds: Sequence[int] | None = None,
    static_decoder: StaticDecoder | None = None,
) -> Rollout:
    """`num_samples` completions of each prompt by `sampler` ("medrl": medrl.rollout.decoding,
    "hf": transformers' generate), as the caller's contexts leave the model: the engine
    (medrl.rollout.engine.generate) runs it in eval mode, without gradients, under its
    sampling context. `static_decoder` (medrl's sampler only): decode in static-shape steps
    (medrl.rollout.static_decode). See medrl.rollout.engine.generate for the other
    arguments."""
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token; load it with medrl.models.load_tokenizer")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not valid; choose one of {list(SAMPLERS)}")
    eos_ids = eos_token_ids(model, tokenizer)
    _check_prompt_seeds(prompt_seeds, len(prompts), sampler)
    step = batch_size or len(prompts)
    starts = range(0, len(prompts), step)
    chunks = [prompts[start : start + step] for start in starts]
    seeds = [prompt_seeds[start : start + step] if prompt_seeds else None for start in starts]
    with _seeded(generator_seed, model_device(model)):
        outputs = [
            _generate_chunk(
                model,
                tokenizer,
                chunk,
                settings,
                num_samples,
                eos_ids,
                pad_id,
                sampler,
                timings,
                chunk_seeds,
                static_decoder,
            )
            for chunk, chunk_seeds in zip(chunks, seeds, strict=True)
        ]
    prompt_ids = _cat_padded([o[0] for o in outputs], pad_id, left=True)  # [N, P]
    prompt_mask = _cat_padded([o[1] for o in outputs], 0, left=True)  # [N, P]
    completion_ids = _cat_padded([o[2] for o in outputs], pad_id, left=False)  # [N, C]
    completion_mask, has_eos = completion_mask_from_eos(completion_ids, eos_ids)  # [N, C], [N]
    # Whatever generate put after the eos (pad, or nothing in a shorter chunk) becomes pad.
    completion_ids = completion_ids.masked_fill(completion_mask == 0, pad_id)  # [N, C]
    kept = [
        ids[mask.bool()].tolist() for ids, mask in zip(completion_ids, completion_mask, strict=True)
    ]
    texts = tokenizer.batch_decode(kept, skip_special_tokens=True)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=list(texts),
        num_tokens=completion_mask.sum(dim=1).tolist(),
        truncated=(~has_eos).tolist(),
        group_index=[b for b in range(len(prompts)) for _ in range(num_samples)],
    )


def _generate_chunk(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: SamplingSettings,
    num_samples: int,
    eos_ids: list[int],
    pad_id: int,
    sampler: str,
    timings: dict[str, float] | None,
    prompt_seeds: Sequence[int] | None,
    static_decoder: StaticDecoder | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt_ids [n, P], prompt_mask [n, P], raw completion ids [n, C]) on the CPU."""
    ids, mask = left_pad(encode_prompts(tokenizer, prompts), pad_id)  # [b, P]
    device = model_device(model)
    prompt_ids = ids.repeat_interleave(num_samples, dim=0)  # [b*G, P]
    prompt_mask = mask.repeat_interleave(num_samples, dim=0)  # [b*G, P]
    # Greedy samples of one prompt are identical (and HF refuses num_return_sequences > 1
    # without sampling): decode each prompt once and repeat it.
    per_call = 1 if settings.greedy else num_samples
    ids, mask = ids.to(device), mask.to(device)
    # Sharded weights (FSDP, ZeRO-3) are gathered from all processes in every forward.
    lockstep = weights_sharded(model) and distributed.world_size() > 1
    if sampler == "medrl":
        completion = decode(
            model,
            ids,
            mask,
            per_call,
            settings,
            eos_ids,
            pad_id,
            timings=timings,
            prompt_seeds=prompt_seeds,
            lockstep=lockstep,
            static_decoder=static_decoder,
        )
    else:
        # Under FSDP generate runs the policy's inner modules, not its root forward: the root
        # unit's weights are gathered around it. synced_gpus keeps the processes in step
        # (transformers sees an FSDP-managed model itself, but not Lightning's ZeRO-3).
        with timed(timings, "decode"), root_weights_gathered(model):
            sequences = model.generate(
                input_ids=ids,
                attention_mask=mask,
                synced_gpus=lockstep,
                num_return_sequences=per_call,
                eos_token_id=eos_ids,
                pad_token_id=pad_id,
                **generation_kwargs(settings),
            )  # [b*per_call, P+C]
        completion = sequences[:, ids.shape[1] :]  # [b*per_call, C]
    # Both samplers return prompt-major rows (generate expands inputs with repeat_interleave).
    completion = completion.cpu().repeat_interleave(num_samples // per_call, dim=0)  # [b*G, C]
    return prompt_ids, prompt_mask, completion


def _check_prompt_seeds(prompt_seeds: Sequence[int] | None, num_prompts: int, sampler: str) -> None:
    if prompt_seeds is None:
        return
    if sampler != "medrl":
        raise ValueError(
            f"prompt_seeds need medrl's sampler (engine.sampler=medrl), not {sampler!r}: "
            "transformers' generate draws from one global random stream"
        )
    if len(prompt_seeds) != num_prompts:
        raise ValueError(f"{len(prompt_seeds)} prompt_seeds for {num_prompts} prompts")


def _cat_padded(parts: Sequence[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    """Concatenate [n_i, L_i] tensors along rows, padding each to the widest with `value`."""
    width = max(part.shape[1] for part in parts)
    padded = []
    for part in parts:
        extra = width - part.shape[1]
        pad = (extra, 0) if left else (0, extra)
        padded.append(torch.nn.functional.pad(part, pad, value=value))
    return torch.cat(padded, dim=0)


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    if seed is None:
        yield
        return
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    else:
        devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def merge_rollouts(parts: Sequence[tuple[Rollout, Sequence[int]]], pad_token_id: int) -> Rollout:
    """One Rollout made of chosen rows of several (dynamic sampling keeps whole groups).

    Each part is (rollout, rows) and becomes group `i` of the result, in order. Prompts are
    re-left-padded and completions re-right-padded to the widest part, with `pad_token_id`.
    """
    picked = [(r, list(rows)) for r, rows in parts]
    prompt_width = max(r.prompt_ids.shape[1] for r, _ in picked)
    completion_width = max(r.completion_ids.shape[1] for r, _ in picked)

    def stack(name: str, width: int, left: bool, value: int) -> torch.Tensor:
        blocks = []
        for rollout, rows in picked:
            block = getattr(rollout, name)[rows]  # [n, w]
            pad = torch.full((len(rows), width - block.shape[1]), value, dtype=block.dtype)
            blocks.append(torch.cat([pad, block] if left else [block, pad], dim=1))
        return torch.cat(blocks)  # [N, width]

    return Rollout(
        prompt_ids=stack("prompt_ids", prompt_width, True, pad_token_id),
        prompt_mask=stack("prompt_mask", prompt_width, True, 0),
        completion_ids=stack("completion_ids", completion_width, False, pad_token_id),
        completion_mask=stack("completion_mask", completion_width, False, 0),
        texts=[r.texts[i] for r, rows in picked for i in rows],
        num_tokens=[r.num_tokens[i] for r, rows in picked for i in rows],
        truncated=[r.truncated[i] for r, rows in picked for i in rows],
        group_index=[g for g, (_, rows) in enumerate(picked) for _ in rows],
    )
