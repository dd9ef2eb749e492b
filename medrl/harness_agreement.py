"""Does medrl's forced choice agree with lm-evaluation-harness? `python -m medrl.harness_agreement
model=... [dataset=...] [format=...] [evaluation.limit=N]` (conf/harness_agreement.yaml).

Both score the same items of the eval pool after the same prompts:

1. medrl: `predict_choices` with the model group's weights and evaluation.choice
   (<run>/medrl/predictions.jsonl).
2. lm-eval (EleutherAI's lm-evaluation-harness, `pip install -e ".[harness]"`), offline: the
   records with medrl's rendered prompts go to <run>/harness/items.jsonl and a local task
   <run>/harness/<task>.yaml reads them (output_type: multiple_choice; doc_to_text: the
   prompt; doc_to_choice: the continuations; doc_to_target: the gold index; target_delimiter:
   evaluation.choice.delimiter); `lm_eval.simple_evaluate` runs it with HFLM loading the model
   group's local folder (pretrained=<folder>), with log_samples (<run>/harness/samples.jsonl).
3. The comparison (`compare`): per item, whether both pick the same option raw (acc) and
   length-normalized (acc_norm, or acc_bytes with length_unit=bytes), and the largest absolute
   difference of any option's log-likelihood; both accuracies. Written to
   <run>/agreement.json and <run>/agreement.md, and printed.

medrl's model is scored and released before lm-eval loads its own copy, so the peak memory is
one model.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig

from medrl.data.mixture import load_dataset
from medrl.data.records import QARecord
from medrl.evaluation import Prediction, predict_choices, write_predictions
from medrl.evaluation.choice import ChoiceSettings, option_continuations
from medrl.evaluation.predictions import eval_prompts
from medrl.models import FullFinetune, ModelSpec, load_policy, resolve_dtype
from medrl.rollout.generation import model_device
from medrl.stages.evaluate import check_mode, eval_choice, eval_sampling
from medrl.utils.config import CONFIG_DIR
from medrl.utils.io import write_atomic

log = logging.getLogger(__name__)
POOL = "eval"
# lm-eval's metric of the length-normalized choice, per evaluation.choice.length_unit.
NORM_METRIC = {"chars": "acc_norm", "bytes": "acc_bytes"}


@dataclass(frozen=True)
class HarnessItem:
    """lm-eval's view of one item (from its logged sample): the options' log-likelihoods in
    doc_to_choice order, and its acc / normalized-acc scores (1.0 or 0.0)."""

    id: str
    loglik: list[float]
    acc: float
    acc_norm: float


@dataclass(frozen=True)
class Agreement:
    """medrl against lm-eval on the same n items.

    same_raw / same_norm:  items where both chose the same option, raw and length-normalized.
    max_abs_diff:          the largest |ll_medrl - ll_harness| over every option of every item.
    differing:             per item whose choice or any log-likelihood (beyond `tolerance`)
                           differs: its id, both choices and both option log-likelihoods.
    """

    n: int
    same_raw: int
    same_norm: int
    max_abs_diff: float
    medrl_accuracy: float
    medrl_accuracy_norm: float
    harness_acc: float
    harness_acc_norm: float
    norm_metric: str
    tolerance: float
    differing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def raw_rate(self) -> float:
        return self.same_raw / self.n

    @property
    def norm_rate(self) -> float:
        return self.same_norm / self.n


# ---- pure pieces ------------------------------------------------------------------------------


def harness_documents(
    records: Sequence[QARecord], prompts: Sequence[str], choice: ChoiceSettings
) -> list[dict[str, Any]]:
    """One lm-eval document per record: its id, medrl's rendered prompt, the labels and
    continuations (evaluation.choice.continuation, no delimiter: lm-eval adds its
    target_delimiter) in presentation order, and the gold answer's index among them."""
    documents = []
    for record, prompt in zip(records, prompts, strict=True):
        continuations = option_continuations(record, choice.continuation)
        labels = list(continuations)
        documents.append(
            {
                "id": record.id,
                "prompt": prompt,
                "labels": labels,
                "choices": list(continuations.values()),
                "gold": labels.index(record.answer),
            }
        )
    return documents


def task_config(name: str, items_path: Path, cache_dir: Path, delimiter: str) -> dict[str, Any]:
    """The lm-eval task over `items_path` (a local JSON-lines file; nothing is downloaded):
    multiple choice, the prompt as is (no description, no few-shot examples, no chat template:
    the prompt is already rendered), `delimiter` between it and each choice."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(items_path)},
            "cache_dir": str(cache_dir),
        },
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": delimiter,
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_bytes", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def harness_items(samples: Sequence[Mapping[str, Any]], norm_metric: str) -> list[HarnessItem]:
    """HarnessItems from lm-eval's logged samples of a multiple_choice task: resps[i][0] is
    option i's (log-likelihood, is_greedy)."""
    items = []
    for sample in samples:
        loglik = [float(resp[0][0]) for resp in sample["resps"]]
        items.append(
            HarnessItem(
                id=str(sample["doc"]["id"]),
                loglik=loglik,
                acc=float(sample["acc"]),
                acc_norm=float(sample[norm_metric]),
            )
        )
    return items


def compare(
    predictions: Sequence[Prediction],
    harness: Sequence[HarnessItem],
    norm_metric: str,
    tolerance: float,
) -> Agreement:
    """Item by item: both choices and every option's log-likelihood. lm-eval's choices are
    recomputed from its log-likelihoods as it computes them (numpy.argmax of ll, and of ll /
    length with medrl's option lengths, the same definition), and checked against its logged
    acc / acc_norm. Items are matched by id; a missing or extra id is an error."""
    by_id = {item.id: item for item in harness}
    if sorted(by_id) != sorted(p.id for p in predictions):
        raise ValueError("medrl and lm-eval scored different items")
    same_raw = same_norm = 0
    max_diff = 0.0
    differing = []
    for prediction in predictions:
        item = by_id[prediction.id]
        labels = list(prediction.option_logprobs or {})
        ours = [prediction.option_logprobs[label] for label in labels]
        lengths = np.array([prediction.option_lengths[label] for label in labels], dtype=float)
        theirs = labels[int(np.argmax(item.loglik))]
        theirs_norm = labels[int(np.argmax(np.array(item.loglik) / lengths))]
        gold = prediction.gold
        if float(theirs == gold) != item.acc or float(theirs_norm == gold) != item.acc_norm:
            raise ValueError(
                f"item {item.id}: lm-eval's logged acc / {norm_metric} do not follow from its "
                "log-likelihoods as medrl reads them"
            )
        diff = max(abs(a - b) for a, b in zip(ours, item.loglik, strict=True))
        max_diff = max(max_diff, diff)
        same_raw += theirs == prediction.answer
        same_norm += theirs_norm == prediction.answer_norm
        if theirs != prediction.answer or theirs_norm != prediction.answer_norm or diff > tolerance:
            differing.append(
                {
                    "id": item.id,
                    "medrl": [prediction.answer, prediction.answer_norm],
                    "harness": [theirs, theirs_norm],
                    "max_abs_diff": diff,
                    "medrl_loglik": dict(zip(labels, ours, strict=True)),
                    "harness_loglik": dict(zip(labels, item.loglik, strict=True)),
                }
            )
    n = len(predictions)
    return Agreement(
        n=n,
        same_raw=same_raw,
        same_norm=same_norm,
        max_abs_diff=max_diff,
        medrl_accuracy=sum(p.correct for p in predictions) / n,
        medrl_accuracy_norm=sum(bool(p.correct_norm) for p in predictions) / n,
        harness_acc=sum(item.acc for item in harness) / n,
        harness_acc_norm=sum(item.acc_norm for item in harness) / n,
        norm_metric=norm_metric,
        tolerance=tolerance,
        differing=differing,
    )


def agreement_markdown(agreement: Agreement, setup: Mapping[str, Any]) -> str:
    """The agreement as a short report: what was compared, the rates, both accuracies."""
    a = agreement
    lines = [
        "# medrl forced choice vs lm-evaluation-harness",
        "",
        *(f"- {key}: {value}" for key, value in setup.items()),
        "",
        "| | medrl | lm-eval | same choice (items) |",
        "| --- | ---: | ---: | ---: |",
        f"| accuracy (acc) | {a.medrl_accuracy:.3f} | {a.harness_acc:.3f} | "
        f"{a.same_raw}/{a.n} ({a.raw_rate:.1%}) |",
        f"| accuracy_norm ({a.norm_metric}) | {a.medrl_accuracy_norm:.3f} | "
        f"{a.harness_acc_norm:.3f} | {a.same_norm}/{a.n} ({a.norm_rate:.1%}) |",
        "",
        f"Largest |log-likelihood difference| over every option: {a.max_abs_diff:.3g}; "
        f"{len(a.differing)} item(s) differ in a choice or by more than {a.tolerance:g} "
        "(listed in agreement.json).",
    ]
    return "\n".join(lines) + "\n"


# ---- side effects ------------------------------------------------------------------------------


def model_folder(spec: ModelSpec, weights_source: str) -> tuple[str, str]:
    """(weights folder, tokenizer folder) for lm-eval's HFLM: the folder medrl loaded the
    weights from, and the tokenizer medrl uses (model.tokenizer_path, else that folder)."""
    if not Path(weights_source).is_dir():
        raise ValueError(
            f"lm-eval loads a local folder and the model's weights come from {weights_source!r}; "
            "point model.path at a local folder"
        )
    return weights_source, str(spec.tokenizer_path or weights_source)


def require_harness() -> None:
    """lm-evaluation-harness must be importable; checked before any model loads."""
    if importlib.util.find_spec("lm_eval") is None:
        raise ImportError(
            'lm-evaluation-harness is not installed: pip install -e ".[harness]" (the dev extra '
            "includes it)"
        )


def run_harness(
    task_dir: Path,
    task: str,
    weights: str,
    tokenizer: str,
    dtype: str,
    device: str,
    batch_size: int,
    softmax_dtype: str | None,
) -> list[dict[str, Any]]:
    """lm-eval's logged samples of `task` (found in `task_dir`), HFLM loading `weights`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    require_harness()
    import lm_eval
    from lm_eval.tasks import TaskManager

    model_args: dict[str, Any] = {
        "pretrained": weights,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "device": device,
    }
    if softmax_dtype is not None:
        model_args["softmax_dtype"] = softmax_dtype
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[task],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=batch_size,
        log_samples=True,
        bootstrap_iters=0,
    )
    return list(results["samples"][task])


def dtype_name(spec: ModelSpec) -> str:
    """The model group's dtype as lm-eval's HFLM takes it (`auto` resolved as medrl resolves it)."""
    return str(resolve_dtype(spec.dtype)).removeprefix("torch.")


@dataclass(frozen=True)
class MedrlSide:
    """medrl's scores, and where lm-eval finds the same model: its weights folder, tokenizer,
    dtype and device."""

    predictions: list[Prediction]
    prompts: list[str]
    weights: str
    tokenizer: str
    dtype: str
    device: str
    seconds: float


def score_with_medrl(
    spec: ModelSpec,
    records: Sequence[QARecord],
    output_format: Any,
    choice: ChoiceSettings,
    batch_size: int,
    out: Path,
) -> MedrlSide:
    """medrl's forced choice on `records` (<out>/medrl/predictions.jsonl); the model is released
    afterwards, so lm-eval's copy is the only one in memory."""
    started = time.perf_counter()
    policy = load_policy(spec, FullFinetune())
    weights, tokenizer = model_folder(spec, policy.weights_source)
    device = str(model_device(policy.model))
    kwargs = spec.chat_template_kwargs
    prompts = eval_prompts(policy.tokenizer, records, output_format, kwargs)
    predictions = predict_choices(
        policy.model, policy.tokenizer, records, output_format, kwargs, choice, batch_size, True
    )
    write_predictions(out / "medrl" / "predictions.jsonl", predictions)
    del policy
    gc.collect()
    seconds = time.perf_counter() - started
    return MedrlSide(predictions, prompts, weights, tokenizer, dtype_name(spec), device, seconds)


def score_with_harness(
    harness: DictConfig,
    records: Sequence[QARecord],
    medrl: MedrlSide,
    choice: ChoiceSettings,
    out: Path,
) -> tuple[list[dict[str, Any]], float]:
    """(lm-eval's logged samples, seconds) on the same items: the documents and the task go to
    <out>/harness/, the samples to <out>/harness/samples.jsonl."""
    started = time.perf_counter()
    harness_dir = out / "harness"
    items_path = harness_dir / "items.jsonl"
    documents = harness_documents(records, medrl.prompts, choice)
    write_atomic(items_path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents))
    config = task_config(harness.task, items_path, harness_dir / "datasets", choice.delimiter)
    write_atomic(harness_dir / f"{harness.task}.yaml", yaml.safe_dump(config, sort_keys=False))
    samples = run_harness(
        harness_dir,
        harness.task,
        medrl.weights,
        medrl.tokenizer,
        medrl.dtype,
        medrl.device,
        harness.batch_size,
        harness.softmax_dtype,
    )
    write_atomic(harness_dir / "samples.jsonl", "".join(_json_line(s) for s in samples))
    return samples, time.perf_counter() - started


def run(cfg: DictConfig) -> Agreement:
    """Score the first evaluation.limit eval items with medrl and with lm-eval; compare, write
    agreement.json / agreement.md and print the latter."""
    require_harness()
    eval_sampling(cfg.evaluation)  # the evaluation block's one validation
    choice = eval_choice(cfg.evaluation)
    if choice is None:
        raise ValueError(
            "harness_agreement compares forced choices: set evaluation.mode=choice_logprob"
        )
    if cfg.evaluation.get("benchmarks") is not None:
        raise ValueError(
            "harness_agreement compares one dataset's eval pool (dataset=<name>); "
            "evaluation.benchmarks is not read here: set it to null"
        )
    spec: ModelSpec = instantiate(cfg.model)
    output_format = instantiate(cfg.format)
    check_mode(cfg.evaluation, output_format)
    records = list(load_dataset(instantiate(cfg.dataset))[POOL])[: cfg.evaluation.limit]
    out = Path(cfg.paths.output_dir)
    medrl = score_with_medrl(spec, records, output_format, choice, cfg.evaluation.batch_size, out)
    samples, harness_seconds = score_with_harness(cfg.harness, records, medrl, choice, out)
    norm_metric = NORM_METRIC[choice.length_unit]
    agreement = compare(
        medrl.predictions, harness_items(samples, norm_metric), norm_metric, cfg.harness.tolerance
    )
    setup = {
        "model": f"{spec.name} ({medrl.weights}, {medrl.dtype}, {medrl.device})",
        "items": f"the first {agreement.n} of {cfg.dataset.name}'s eval pool, "
        f"format={output_format.name}",
        "evaluation.choice": json.dumps(asdict(choice)),
        "evaluation.batch_size": cfg.evaluation.batch_size,
        "lm-eval": f"{_harness_version()}, HFLM softmax_dtype={cfg.harness.softmax_dtype}, "
        f"batch_size={cfg.harness.batch_size}",
        "time": f"medrl {medrl.seconds:.1f} s, lm-eval {harness_seconds:.1f} s "
        "(each loading its model)",
    }
    write_atomic(out / "agreement.json", json.dumps(_summary(agreement, setup), indent=2))
    text = agreement_markdown(agreement, setup)
    write_atomic(out / "agreement.md", text)
    print(text)
    return agreement


def _summary(agreement: Agreement, setup: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "setup": dict(setup),
        "raw_rate": agreement.raw_rate,
        "norm_rate": agreement.norm_rate,
    } | asdict(agreement)


def _json_line(sample: Mapping[str, Any]) -> str:
    return json.dumps(sample, ensure_ascii=False, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    """What JSON cannot write in lm-eval's samples: numpy scalars as numbers, else text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _harness_version() -> str:
    from importlib import metadata

    return f"lm_eval {metadata.version('lm_eval')}"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="harness_agreement")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
