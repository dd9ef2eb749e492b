"""Per-item predictions on an evaluation pool, their JSONL files, and a first metrics summary.

Predictions are kept per item (not only as an accuracy) so any two checkpoints can later be
compared on the same items with paired tests. Parsing is strict: a completion the output format
cannot parse has no answer and counts as wrong.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from medrl.data.records import QARecord
from medrl.prompts import OutputFormat, build_messages, reference_text, render_prompt
from medrl.rollout import RolloutEngine, SamplingSettings, encode_prompts, generate
from medrl.utils.io import write_atomic

# The two-sided 95% normal quantile, Phi^-1(0.975).
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Prediction:
    """One model answer to one record, with everything needed to score it again later.

    answer:      the strictly parsed label, or None when the completion does not parse.
    gold:        the record's answer; correct = (answer == gold).
    format_ok / json_valid / schema_ok / error: as in `medrl.prompts.ParsedCompletion`.
    num_tokens:  generated tokens, the eos included; truncated: no eos within max_new_tokens.
    sample:      which of the item's k completions this is (0 when one per item).
    answer_text / reference:  open-ended formats only (format=free_text): the parsed prose
                 answer (None when it did not parse) and the record's reference text it is
                 scored against; None with closed formats.
    source:      the record's dataset (medmcqa, medqa, ...): a mixture's items are also scored
                 per source.
    option_logprobs / option_lengths / answer_norm / correct_norm:  forced choice only
                 (evaluation.mode=choice_logprob; None when generated): {label: summed
                 log-likelihood of the option's continuation}, {label: its length in
                 evaluation.choice.length_unit}, the length-normalized answer (argmax of
                 log-likelihood / length) and whether it is the gold one. `answer` is then the
                 raw argmax, `completion` the chosen continuation and `num_tokens` its tokens
                 (medrl.evaluation.choice_scoring).
    """

    id: str
    prompt: str
    completion: str
    answer: str | None
    gold: str
    correct: bool
    format_ok: bool
    json_valid: bool
    schema_ok: bool
    num_tokens: int
    truncated: bool
    subject: str | None = None
    error: str | None = None
    sample: int = 0
    answer_text: str | None = None
    reference: str | None = None
    source: str | None = None
    option_logprobs: dict[str, float] | None = None
    option_lengths: dict[str, int] | None = None
    answer_norm: str | None = None
    correct_norm: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one JSONL line of `write_predictions`)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        """Inverse of `to_json`; unknown or missing keys raise ValueError naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown prediction keys {unknown}; expected a subset of {sorted(names)}"
            )
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"prediction is missing the keys {missing}")
        return cls(**data)


def make_prediction(
    record: QARecord,
    prompt: str,
    completion: str,
    output_format: OutputFormat,
    num_tokens: int,
    truncated: bool,
    sample: int = 0,
) -> Prediction:
    """Strictly parse `completion` for `record` and score it (open-ended formats: keep the
    prose answer and the reference for the text metrics)."""
    parsed = output_format.parse(completion, record.labels)
    open_ended = output_format.open_ended
    return Prediction(
        id=record.id,
        prompt=prompt,
        completion=completion,
        answer=parsed.answer,
        gold=record.answer,
        correct=parsed.answer is not None and parsed.answer == record.answer,
        format_ok=parsed.format_ok,
        json_valid=parsed.json_valid,
        schema_ok=parsed.schema_ok,
        num_tokens=num_tokens,
        truncated=truncated,
        subject=record.subject,
        error=parsed.error,
        sample=sample,
        answer_text=parsed.explanation if open_ended else None,
        reference=reference_text(record) if open_ended else None,
        source=record.source or None,
    )


def check_batching(batch_size: int, shard: tuple[int, int]) -> None:
    """The batching arguments `predict` and forced choice's `predict_choices` share: at least
    one record per batch, and a shard rank within its world size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world_size = shard
    if not 0 <= rank < world_size:
        raise ValueError(f"shard rank {rank} is not in [0, world_size={world_size})")


def predict(
    policy_model: nn.Module,
    tokenizer: Any,
    records: Iterable[QARecord],
    output_format: OutputFormat,
    chat_template_kwargs: Mapping[str, Any] | None,
    settings: SamplingSettings,
    batch_size: int = 8,
    progress: bool = False,
    num_samples: int = 1,
    seed: int | None = None,
    shard: tuple[int, int] = (0, 1),
    engine: RolloutEngine | None = None,
) -> list[Prediction]:
    """`num_samples` predictions per record (samples 0..k-1 together), in the order of `records`.

    Prompts are rendered as in training (`build_messages` + `render_prompt`) and decoded by
    `generate` with `settings` (greedy for standard evaluation), `batch_size` records per call.
    Batches are formed from prompts sorted by token length, so a batch pads little; the result
    is put back in record order. With sampling, batch i draws from an RNG seeded with
    seed + i (seed=None: the global RNG), so a seeded evaluation is reproducible.
    progress=True shows a rich progress bar over the batches.

    shard=(rank, world_size): run only batches rank, rank + world_size, ... and return their
    records' predictions (still in record order). Batches, and the seed of each, are the same
    as in one process, so the shards of all ranks together are exactly the one-process result
    (`merge_shards`).

    engine: the rollout engine to sample with (validation during training passes the stage's
    own); None = the straightforward one. Greedy decoding gives the same tokens either way.
    """
    check_batching(batch_size, shard)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if num_samples > 1 and settings.greedy:
        raise ValueError(
            f"num_samples={num_samples} with greedy decoding gives {num_samples} identical "
            "completions; set greedy=False (evaluation.sampling.greedy=false) to sample"
        )
    rank, world_size = shard
    records = list(records)
    if not records:
        return []
    prompts = eval_prompts(tokenizer, records, output_format, chat_template_kwargs)
    batches = length_batches(tokenizer, prompts, batch_size)
    per_record: dict[int, list[Prediction]] = {}
    mine = list(enumerate(batches))[rank::world_size]
    with progress_bar(progress) as bar:
        task = bar.add_task("predicting", total=len(mine))
        for number, batch in mine:
            rollout = generate(
                policy_model,
                tokenizer,
                [prompts[i] for i in batch],
                settings,
                num_samples=num_samples,
                generator_seed=None if seed is None else seed + number,
                engine=engine,
            )
            for row, position in enumerate(rollout.group_index):
                index = batch[position]  # rows are prompt-major: sample = row % num_samples
                per_record.setdefault(index, []).append(
                    make_prediction(
                        records[index],
                        prompts[index],
                        rollout.texts[row],
                        output_format,
                        rollout.num_tokens[row],
                        rollout.truncated[row],
                        sample=row % num_samples,
                    )
                )
            bar.advance(task)
    return [p for i in sorted(per_record) for p in per_record[i]]


def eval_prompts(
    tokenizer: Any,
    records: Sequence[QARecord],
    output_format: OutputFormat,
    chat_template_kwargs: Mapping[str, Any] | None,
) -> list[str]:
    """Each record's prompt as training renders it (`build_messages` + `render_prompt`, the chat
    template with `chat_template_kwargs`): what generation continues and forced choice scores
    each option after."""
    return [
        render_prompt(tokenizer, build_messages(record, output_format), chat_template_kwargs)
        for record in records
    ]


def length_batches(tokenizer: Any, prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of `prompts` in batches of `batch_size`, formed from the prompts sorted by token
    length (stable: equal lengths keep their order), so a batch pads little."""
    lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
    by_length = sorted(range(len(prompts)), key=lengths.__getitem__)
    return [by_length[start : start + batch_size] for start in range(0, len(by_length), batch_size)]


def merge_shards(
    shards: Iterable[list[Prediction]], records: Iterable[QARecord]
) -> list[Prediction]:
    """The predictions of `predict`'s shards put back in the order of `records` (every record's
    samples together, 0..k-1), as one process would have returned them. Records are matched
    by id, so their ids must be unique (the data layer guarantees it for pools); every record
    must have samples 0..k-1 exactly once, with the same k, and no prediction may be left over.
    """
    records = list(records)
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("merge_shards needs records with unique ids")
    by_id: dict[str, list[Prediction]] = {}
    for prediction in (p for shard in shards for p in shard):
        by_id.setdefault(prediction.id, []).append(prediction)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"no shard holds predictions for records {missing[:5]}")
    unknown = sorted(set(by_id) - set(ids))
    if unknown:
        raise ValueError(f"predictions for records that are not being merged: {unknown[:5]}")
    merged = [sorted(by_id[i], key=lambda p: p.sample) for i in ids]
    expected = list(range(len(merged[0]))) if merged else []
    for record_id, predictions in zip(ids, merged, strict=True):
        if [p.sample for p in predictions] != expected:
            raise ValueError(
                f"record {record_id!r} has samples {[p.sample for p in predictions]}, expected "
                f"{expected}: a shard is repeated or incomplete"
            )
    return [p for predictions in merged for p in predictions]


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar (description, bar, done/total, elapsed); silent when not enabled."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def write_predictions(path: str | os.PathLike[str], predictions: Iterable[Prediction]) -> Path:
    """Write one JSON object per line, atomically: readers see the old file or the whole new one."""
    lines = (json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in predictions)
    return write_atomic(path, "".join(lines))


def read_predictions(path: str | os.PathLike[str]) -> list[Prediction]:
    """Read a `write_predictions` file; a malformed line raises ValueError naming file and line."""
    predictions = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                predictions.append(Prediction.from_json(json.loads(line)))
            except (ValueError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a prediction: {err}") from err
    return predictions


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    With p = successes / n:
        center = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)
    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at p = 0 or
    1: the bounds are then exactly 0 and 1 respectively.
    """
    if n <= 0:
        raise ValueError(f"a confidence interval needs n > 0 trials, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At p = 0 or 1 the formula gives the exact bound up to rounding; state it exactly.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high
