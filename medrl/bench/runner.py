"""The benchmark's orchestration: prompts once, runs alternating between systems, the report.

Each run is a worker subprocess (medrl.bench.worker); this process loads no weights (it only
renders the prompts with the tokenizer, which builds the model cache on first use), so nothing
here is measured.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from medrl.bench.common import model_spec, render_prompts
from medrl.bench.environment import describe, machine_slug
from medrl.bench.report import render_report, write_json, write_scaling
from medrl.bench.settings import (
    MODES,
    SYSTEMS,
    BenchTask,
    grpo_kwargs,
    plan_rounds,
    record_dict,
    resolve_device,
    schedule,
)
from medrl.bench.stats import system_summary
from medrl.bench.trl_settings import (
    PRECISIONS,
    UnmappableSetting,
    grpo_problems,
    lora_config_kwargs,
)
from medrl.bench.worker import spawn
from medrl.models.spec import DTYPES

log = logging.getLogger(__name__)
SECTIONS = {"all": ("grpo", "sft", "rollout"), "scaling": ()}


def compute_dtype(cfg: Any) -> str:
    """The dtype the bench's products run in: bfloat16 under bf16-mixed, else the weights'."""
    if cfg.precision == "bf16-mixed":
        return "bfloat16"
    return "float32" if str(cfg.dtype) in ("float32", "auto") else str(cfg.dtype)


def trl_choice(setting: Any) -> tuple[bool, str | None]:
    """(compare with TRL?, why not): trl=auto compares when trl imports, true requires it."""
    setting = str(setting).lower()
    if setting not in ("auto", "true", "false"):
        raise ValueError(f"trl={setting!r}; valid: auto, true, false")
    if setting == "false":
        return False, "TRL skipped: trl=false"
    if importlib.util.find_spec("trl") is not None:
        return True, None
    reason = 'TRL skipped: trl is not installed (pip install -e ".[bench]")'
    if setting == "true":
        raise ModuleNotFoundError(reason.replace("TRL skipped: ", "trl=true but "))
    return False, reason


def check_trl_settings(cfg: DictConfig, kinds: tuple[str, ...]) -> None:
    """Fail before any run when TRL cannot express the settings (medrl.bench.trl_settings)."""
    problems = []
    try:
        lora_config_kwargs(instantiate(cfg.adapter))
    except UnmappableSetting as error:
        problems.append(str(error))
    if "grpo" in kinds:
        problems += grpo_problems(grpo_kwargs(cfg))
    if problems:
        raise UnmappableSetting(
            "TRL cannot run these settings (or compare medrl alone with trl=false): "
            + "; ".join(problems)
        )


def prepare_prompts(cfg: DictConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The first max(B, sft_batch_size) records of the dataset's GRPO pool and their prompts,
    rendered by the output format and the model's chat template (medrl.prompts.render_prompt).
    B is grpo.module.prompts_per_step (the bench's `B` unless overridden there)."""
    from medrl.data import load_pools
    from medrl.models import load_tokenizer

    pools = load_pools(instantiate(cfg.dataset))
    count = max(int(cfg.grpo.module.prompts_per_step), int(cfg.sft_batch_size))
    records = list(pools["grpo"][:count])
    if len(records) < count:
        raise ValueError(f"the grpo pool has {len(records)} records; the bench needs {count}")
    spec = model_spec(cfg)
    tokenizer = load_tokenizer(spec)
    prompts = render_prompts(tokenizer, records, instantiate(cfg.format), spec.chat_template_kwargs)
    return [record_dict(r) for r in records], prompts


def settings_summary(cfg: DictConfig) -> dict[str, Any]:
    """The settings both systems share, as the report's header lists them (read from the
    groups the workers instantiate, so a direct grpo.module.* override shows too)."""
    adapter, module = cfg.adapter, cfg.grpo.module
    sampling = module.sampling
    kind = adapter._target_.rsplit(".", 1)[-1]
    if "r" in adapter:
        kind = f"{kind} r={adapter.r} alpha={adapter.alpha} on {list(adapter.target_modules)}"
    rounds, per_run = plan_rounds(int(cfg.steps), int(cfg.rounds))
    measurement = (
        f"{rounds} round(s) per system, alternating, each {cfg.warmup} warm-up + "
        f"{per_run} measured step(s) in a fresh process"
    )
    if cfg.mode == "scaling":
        measurement = (
            f"G {list(cfg.scaling.G)} x max_new_tokens {list(cfg.scaling.max_new_tokens)}, "
            f"one fresh process per point and system, {cfg.scaling.warmup} warm-up + "
            f"{cfg.scaling.steps} measured step(s)"
        )
    return {
        "model": f"{cfg.model.name} ({cfg.dtype} weights, precision {cfg.precision})",
        "adapter": kind,
        "grpo": (
            f"B={module.prompts_per_step} prompts x G={module.group_size}, up to "
            f"{sampling.max_new_tokens} new tokens, temperature {sampling.temperature}, "
            f"top_p {sampling.top_p}, beta {module.kl.beta} ({module.kl.estimator}), "
            f"lr {module.lr}, mu {module.mu}, micro-batch {module.micro_batch_size}, "
            f"{module.loss_aggregation}, std {module.advantage.std_scope} "
            f"({module.advantage.std_estimator})"
        ),
        "medrl engine": ", ".join(
            f"{key} {value}" for key, value in module.engine.items() if key != "_target_"
        ),
        "sft": f"batch {cfg.sft_batch_size}, max_seq_length {cfg.sft.max_seq_length}",
        "measurement": measurement,
        "seed": int(cfg.seed),
    }


class Runs:
    """Spawns workers with consecutive indices into one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._index = itertools.count(1)

    def run(self, task: BenchTask) -> dict[str, Any]:
        log.info("%s: %d warm-up + %d measured steps", task.label, task.warmup, task.steps)
        result = spawn(task, self.folder, next(self._index))
        if result.get("failed"):
            log.error("%s failed; see %s", task.label, result["log"])
        else:
            seconds = [s["seconds"] for s in result["steps"] if s["measured"]]
            log.info("%s: steps %s s", task.label, ", ".join(f"{s:.2f}" for s in seconds))
        return result


def compare(
    kind: str,
    cfg: DictConfig,
    systems: tuple[str, ...],
    inputs: tuple[list, list],
    runs: Runs,
    *,
    steps: int,
    warmup: int,
    rounds: int,
    label: str | None = None,
) -> dict[str, Any]:
    """Every system's runs of `kind`, alternating by round, and each system's summary."""
    records, prompts = inputs
    size = int(cfg.sft_batch_size if kind == "sft" else cfg.grpo.module.prompts_per_step)
    rounds, per_run = plan_rounds(steps, rounds)
    config = OmegaConf.to_container(cfg, resolve=True)
    by_system: dict[str, list] = {system: [] for system in systems}
    for round_index, system in schedule(systems, rounds):
        if any(r.get("failed") for r in by_system[system]):
            continue  # a system that failed once fails again: report it, spend no more time
        task = BenchTask(
            kind=kind,
            system=system,
            label=f"{label or kind}/{system}/round{round_index + 1}",
            config=config,
            records=records[:size],
            prompts=prompts[:size],
            warmup=warmup,
            steps=per_run,
            round=round_index,
        )
        by_system[system].append(runs.run(task))
    return {
        "systems": {
            system: {"runs": results, "summary": system_summary(results)}
            for system, results in by_system.items()
        }
    }


def scaling_points(cfg: DictConfig) -> Iterator[tuple[int, int]]:
    for group_size in cfg.scaling.G:
        for tokens in cfg.scaling.max_new_tokens:
            yield int(group_size), int(tokens)


def scaling(cfg: DictConfig, trl: bool, inputs: tuple[list, list], runs: Runs) -> list[dict]:
    """medrl's GRPO step (and TRL's with scaling.trl) at every (G, max_new_tokens) point."""
    systems = ("medrl", "trl") if trl and cfg.scaling.trl else ("medrl",)
    points = []
    for group_size, tokens in scaling_points(cfg):
        point_cfg = copy.deepcopy(cfg)
        module = point_cfg.grpo.module  # set where the workers read it (not only G=...)
        point_cfg.G, point_cfg.max_new_tokens = group_size, tokens
        module.group_size, module.sampling.max_new_tokens = group_size, tokens
        section = compare(
            "grpo",
            point_cfg,
            systems,
            inputs,
            runs,
            steps=int(cfg.scaling.steps),
            warmup=int(cfg.scaling.warmup),
            rounds=1,
            label=f"scaling_G{group_size}_T{tokens}",
        )
        for system, figures in section["systems"].items():
            points.append({"system": system, "G": group_size, "max_new_tokens": tokens, **figures})
    return points


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmarks `cfg.mode` names, write results.json and report.md, print the report.

    Raises after reporting when any run failed, so `make bench` fails loudly.
    """
    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode!r}; valid: {list(MODES)}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype={cfg.dtype!r}; valid: {list(DTYPES)}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision={cfg.precision!r}; valid: {list(PRECISIONS)}")
    with open_dict(cfg):
        cfg.device = resolve_device(str(cfg.device))
    trl, skipped = trl_choice(cfg.trl)
    kinds = SECTIONS.get(cfg.mode, (cfg.mode,))
    if trl and (cfg.mode != "scaling" or cfg.scaling.trl):
        check_trl_settings(cfg, ("grpo",) if cfg.mode == "scaling" else kinds)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = prepare_prompts(cfg)
    runs = Runs(out / "workers")
    results: dict[str, Any] = {
        "environment": describe(
            str(cfg.device),
            int(cfg.threads),
            bandwidth=cfg.device == "cpu",
            compute_dtype=compute_dtype(cfg),
        ),
        "settings": settings_summary(cfg),
        "notes": [skipped] if skipped else [],
        "prompts": inputs[1],
        "sections": {},
    }
    for kind in kinds:
        systems = tuple(s for s in SYSTEMS[kind] if s != "trl" or trl)
        results["sections"][kind] = compare(
            kind,
            cfg,
            systems,
            inputs,
            runs,
            steps=int(cfg.steps),
            warmup=int(cfg.warmup),
            rounds=int(cfg.rounds),
        )
    if cfg.mode == "scaling":
        results["scaling"] = scaling(cfg, trl, inputs, runs)
        written = write_scaling(out / "scaling", results["scaling"])
        results["notes"].append("scaling: " + ", ".join(str(p) for p in written))
    report = render_report(results)
    (out / "report.md").write_text(report)
    write_json(out / "results.json", results)
    if cfg.get("publish_dir"):
        kept = publish(results, report, Path(str(cfg.publish_dir)), str(cfg.publish_name))
        print(f"kept for this machine kind: {kept}")
    print(report)
    print(f"raw per-step times: {out / 'results.json'}")
    failed = [r["label"] for r in _all_runs(results) if r.get("failed")]
    if failed:
        raise RuntimeError(f"benchmark runs failed: {failed}; their logs are in {out / 'workers'}")
    return results


def publish(results: dict[str, Any], report: str, folder: Path, name: str) -> Path:
    """Write the report and results to folder/<machine kind>/<name>.{md,json}: each kind of
    machine keeps its own results (a rerun on the same kind replaces its own)."""
    target = folder / machine_slug(results["environment"])
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{name}.md").write_text(report)
    write_json(target / f"{name}.json", results)
    return target / f"{name}.md"


def _all_runs(results: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for section in results["sections"].values():
        for system in section["systems"].values():
            yield from system["runs"]
    for point in results.get("scaling", []):
        yield from point["runs"]
