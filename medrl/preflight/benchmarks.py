"""Preflight of several benchmarks (evaluation.benchmarks): no benchmark scores a question the
evaluated models trained on, and every benchmark's prompts fit the model's context.

What the models trained on, as far as it can be known before any weights load:

- in a training run (medrl.train): every pool but the eval pool (sft, grpo, val) of every
  training stage's dataset. The run cleared them of every benchmark's questions when it built
  them (medrl.data.mixture.exclude_eval_questions); this recomputes the overlap, as the pool
  checks do for the run's own eval pool.
- in medrl.eval: each checkpoint and the parent checkpoints of its lineage that are still on
  disk: the dataset each stage trained on is rebuilt from the config.yaml it saved (no weights),
  and its non-eval pools are checked. The rebuilt pools are compared with what the manifest
  recorded (the ids hash of each pool the stage read: sft_train and sft_val, the head and tail
  of the SFT pool; grpo): when they agree the check is on exactly what the stage trained on and
  an overlap fails; when they do not (the data changed since, or the run dropped questions of
  another eval pool), an overlap only warns. A base model's training data is unknown.

Questions are compared by normalized text and by (dataset, record id): ids mean something only
within one dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medrl.checkpoints import Manifest
from medrl.checkpoints.hashing import ids_hash
from medrl.checkpoints.manifest import LineageError
from medrl.data import load_dataset
from medrl.data.errors import DataError
from medrl.data.pools import record_text
from medrl.data.records import QARecord
from medrl.evaluation.choice import ChoiceSettings
from medrl.evaluation.settings import BENCHMARKS_KEY
from medrl.preflight.context import Renderer, check_choice_fits, check_generation_fits
from medrl.preflight.report import CheckResult, failed, passed, skipped, warned
from medrl.preflight.values import select, values_at
from medrl.utils.settings import SettingsError, is_count

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"  # the resolved run config a stage checkpoint keeps


@dataclass(frozen=True)
class TrainedOn:
    """Questions an evaluated model trained on (or may have): what they are, the records, and
    whether they are known to be exactly the trained-on pool (`verified`)."""

    label: str
    records: Sequence[QARecord]
    verified: bool = True


def shared_questions(a: Sequence[QARecord], b: Sequence[QARecord]) -> tuple[int, int]:
    """(shared (dataset, record id) pairs, shared normalized question texts) of two pools."""
    ids_a, ids_b = ({(r.source, r.id) for r in pool} for pool in (a, b))
    texts_a, texts_b = ({record_text(r) for r in pool} for pool in (a, b))
    return len(ids_a & ids_b), len(texts_a & texts_b)


def disjoint_checks(
    benchmarks: Mapping[str, Sequence[QARecord]], trained: Sequence[TrainedOn]
) -> list[CheckResult]:
    """One result per benchmark: its scored items share no question with any trained-on pool
    (fail on a verified pool, warn on one rebuilt without confirmation)."""
    if not trained:
        note = "no training pool is known (only a base model is evaluated)"
        return [skipped("pools", f"{BENCHMARKS_KEY}: {note}", BENCHMARKS_KEY)]
    results = []
    for name, records in benchmarks.items():
        hits = [(t, *shared_questions(records, t.records)) for t in trained]
        hits = [(t, ids, texts) for t, ids, texts in hits if ids or texts]
        if not hits:
            message = (
                f"{BENCHMARKS_KEY}: {name}'s {len(records)} scored items share no question "
                f"(ids, texts) with {len(trained)} trained-on pools: "
                + ", ".join(t.label for t in trained)
            )
            results.append(passed("pools", message, BENCHMARKS_KEY))
            continue
        found = "; ".join(f"{t.label}: {ids} ids, {texts} texts" for t, ids, texts in hits)
        message = (
            f"{BENCHMARKS_KEY}: {name}'s scored items share questions with what the evaluated "
            f"models trained on ({found}); its accuracy would count memorized answers: drop "
            f"{name} from {BENCHMARKS_KEY}, or evaluate models not trained on it"
        )
        if any(t.verified for t, _, _ in hits):
            results.append(failed("pools", message, BENCHMARKS_KEY))
        else:
            unsure = " (those pools were rebuilt from config.yaml and differ from the manifest)"
            results.append(warned("pools", message + unsure, BENCHMARKS_KEY))
    return results


# ---- what checkpoints trained on ----------------------------------------------------------


def lineage_training(folders: Sequence[Path]) -> tuple[list[TrainedOn], list[CheckResult]]:
    """The pools every stage checkpoint in `folders`' lineages trained on (each checkpoint
    once), and a skip result for each one whose data could not be rebuilt or found."""
    trained: list[TrainedOn] = []
    notes: list[CheckResult] = []
    for folder in _lineage(folders, notes):
        try:
            trained += checkpoint_training(folder)
        except (DataError, OSError, InstantiationException, OmegaConfBaseException) as error:
            message = f"{BENCHMARKS_KEY}: the training pools of {folder} not checked: {error}"
            notes.append(skipped("pools", message, BENCHMARKS_KEY))
    return trained, notes


def _lineage(folders: Sequence[Path], notes: list[CheckResult]) -> Iterator[Path]:
    """Each checkpoint folder, then its parent checkpoints while they are on disk; a parent
    that is gone leaves a skip note."""
    seen: set[Path] = set()
    for start in folders:
        folder: Path | None = Path(start)
        while folder is not None and folder.resolve() not in seen:
            seen.add(folder.resolve())
            yield folder
            folder = _parent_checkpoint(folder, notes)


def _parent_checkpoint(folder: Path, notes: list[CheckResult]) -> Path | None:
    try:
        parent = Manifest.read(folder).parent
    except LineageError:
        return None
    if parent.kind != "checkpoint":
        return None
    location = Path(parent.location)
    if (location / "manifest.json").is_file():
        return location
    message = (
        f"{BENCHMARKS_KEY}: {folder}'s parent checkpoint {location} is not on disk; what it "
        "trained on is not checked"
    )
    notes.append(skipped("pools", message, BENCHMARKS_KEY))
    return None


def checkpoint_training(folder: Path) -> list[TrainedOn]:
    """The non-eval pools of the dataset the checkpoint's stage trained on, rebuilt from its
    config.yaml, each `verified` when every pool the manifest recorded is found among them."""
    config = OmegaConf.load(Path(folder) / CONFIG_FILE)
    if not isinstance(config, DictConfig) or "dataset" not in config:
        raise DataError(f"{folder / CONFIG_FILE} has no dataset block")
    pools = load_dataset(instantiate(config.dataset))
    training = {name: records for name, records in pools.items() if name != pools.eval_pool}
    manifest = Manifest.read(folder)
    verified = recorded_pools_found(manifest.data_pools, training)
    title = pools.summary.title
    return [
        TrainedOn(f"{manifest.stage} ({folder}) {title} pool {name}", records, verified)
        for name, records in training.items()
    ]


def recorded_pools_found(
    recorded: Mapping[str, Mapping[str, Any]], pools: Mapping[str, Sequence[QARecord]]
) -> bool:
    """True when each pool a manifest recorded (count, ids_hash) is the head or the tail of
    one of `pools` (SFT records its pool's head and held-out tail, GRPO its whole pool)."""
    return bool(recorded) and all(
        any(_head_or_tail(records, entry) for records in pools.values())
        for entry in recorded.values()
    )


def _head_or_tail(records: Sequence[QARecord], entry: Mapping[str, Any]) -> bool:
    count = int(entry.get("count", -1))
    if not 0 <= count <= len(records):
        return False
    ids = [r.id for r in records]
    slices = (ids[:count], ids[len(ids) - count :])
    return any(ids_hash(part) == entry.get("ids_hash") for part in slices)


# ---- prompt lengths -----------------------------------------------------------------------


def benchmark_context_checks(
    cfg: DictConfig,
    benchmarks: Mapping[str, Sequence[QARecord]],
    renderer: Renderer,
    window: int | None,
    forced_choice: bool,
) -> list[CheckResult]:
    """Check 7 per benchmark: its longest prompt + the generation length (or its longest
    option, in forced choice) within the model's context (PubMedQA's abstracts are long)."""
    if renderer.tokenizer is None:
        return [skipped("context", f"{BENCHMARKS_KEY}: no tokenizer: prompt lengths not checked")]
    if window is None:
        return [skipped("context", f"{BENCHMARKS_KEY}: the model's context is unknown")]
    results = []
    for name, records in benchmarks.items():
        if not records:
            continue
        result = _context_check(cfg, records, renderer, window, forced_choice)
        if result is not None:
            results.append(replace(result, message=f"{BENCHMARKS_KEY} {name}: {result.message}"))
    return results


def _context_check(
    cfg: DictConfig,
    records: Sequence[QARecord],
    renderer: Renderer,
    window: int,
    forced_choice: bool,
) -> CheckResult | None:
    if forced_choice:
        if renderer.output_format.open_ended:
            return None  # evaluation.mode's own check names the problem
        try:
            choice = ChoiceSettings.from_values(values_at(cfg, "evaluation.choice"))
        except SettingsError:
            return None  # the evaluation block's check names the bad value
        return check_choice_fits(records, renderer, choice, window)
    key = "evaluation.sampling.max_new_tokens"
    max_new_tokens = select(cfg, key)
    if not is_count(max_new_tokens, 1):
        return None  # the evaluation block's check names the bad value
    return check_generation_fits("eval", key, max_new_tokens, records, renderer, window)
