"""Read a Hydra multirun folder: one `Job` per job folder, failed and killed jobs included.

Hydra writes `<sweep dir>/<job num>/` per job with `.hydra/overrides.yaml` (what makes a folder
a job folder) and `.hydra/config.yaml`; `medrl.train.write_results` adds `results.json` when a
job succeeds, and `medrl.sweeps.callbacks.JobStatus` adds `job_status.json` when it ends. A job
without results.json is not dropped: it is FAILED (its status file says so, with the error) or
INCOMPLETE (no status file: the process was killed), and the summary lists it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

COMPLETED = "COMPLETED"
FAILED = "FAILED"
INCOMPLETE = "INCOMPLETE"

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
CONFIG_FILE = Path(".hydra") / "config.yaml"
RESULTS_FILE = "results.json"
STATUS_FILE = "job_status.json"


@dataclass(frozen=True)
class Job:
    """One job folder of a sweep.

    overrides:   the job's override strings as Hydra saved them (`seed=1`, `+a.b=2`).
    status:      COMPLETED (results.json exists), FAILED or INCOMPLETE.
    metrics:     results.json's metrics ({} unless completed).
    predictions: the product's predictions file (the last chain point that has one), or None.
    config:      the job's `.hydra/config.yaml` (unresolved), or None when it is missing.
    """

    name: str
    path: Path
    overrides: tuple[str, ...]
    status: str
    error: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    optimized_metric: str | None = None
    predictions: Path | None = None
    config: DictConfig | None = None

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def parse_override(override: str) -> tuple[str, str]:
    """`key=value` -> (key, value), the key without Hydra's `+` / `++` / `~` prefix.

    `~key` (a deletion) has no value: ("key", "~"), so it still tells two jobs apart.
    """
    text = override.strip()
    if text.startswith("~"):
        return text.lstrip("~").split("=", 1)[0], "~"
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"override {override!r} is not of the form key=value")
    return key.lstrip("+"), value


def find_job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The job folders directly under `sweep_dir`, numerically ordered (0, 1, ..., 10).

    Raises FileNotFoundError naming the folder when it does not exist or holds no job folder.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder {root} does not exist")
    dirs = [path for path in root.iterdir() if (path / OVERRIDES_FILE).is_file()]
    if not dirs:
        raise FileNotFoundError(
            f"no job folders in {root}: expected <job num>/{OVERRIDES_FILE.as_posix()} "
            "folders directly under it (a Hydra multirun folder such as multirun/<date>/<time>)"
        )
    return sorted(dirs, key=_job_order)


def collect_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job of the sweep, in job-number order."""
    return [load_job(path) for path in find_job_dirs(sweep_dir)]


def load_job(job_dir: Path) -> Job:
    """Read one job folder; an unreadable results.json makes the job FAILED with the reason."""
    overrides = _read_overrides(job_dir / OVERRIDES_FILE)
    config = _read_config(job_dir / CONFIG_FILE)
    base = {"name": job_dir.name, "path": job_dir, "overrides": overrides, "config": config}
    results_path = job_dir / RESULTS_FILE
    if not results_path.is_file():
        status, error = _read_status(job_dir / STATUS_FILE)
        optimized = _optimized_metric_of(config)
        return Job(**base, status=status, error=error, optimized_metric=optimized)
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        metrics = {str(k): _metric_value(v) for k, v in results.get("metrics", {}).items()}
    except (ValueError, TypeError, AttributeError) as err:
        return Job(**base, status=FAILED, error=f"unreadable {RESULTS_FILE}: {err}")
    optimized = (results.get("optimized_metric") or {}).get("name") or _optimized_metric_of(config)
    return Job(
        **base,
        status=COMPLETED,
        metrics=metrics,
        optimized_metric=optimized,
        predictions=_product_predictions(job_dir, results),
    )


def seed_of(job: Job, seed_keys: Sequence[str]) -> tuple[str, ...]:
    """The job's seed identity: per seed key, its override value, else the config's value.

    Jobs of two groups are paired when these tuples are equal.
    """
    overrides = dict(parse_override(o) for o in job.overrides)
    return tuple(
        overrides[key] if key in overrides else _config_value(job.config, key) for key in seed_keys
    )


def aggregate_block(jobs: Sequence[Job]) -> dict[str, Any] | None:
    """The `aggregate` block of the first job config that has one (resolved), else None."""
    for job in jobs:
        if job.config is not None and "aggregate" in job.config:
            block = OmegaConf.to_container(job.config.aggregate, resolve=True)
            return dict(block) if block else {}
    return None


# ---- helpers ----------------------------------------------------------------------------------


def _job_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def _read_overrides(path: Path) -> tuple[str, ...]:
    loaded = OmegaConf.load(path)
    if not isinstance(loaded, ListConfig):
        raise ValueError(f"{path}: expected a YAML list of override strings")
    return tuple(str(item) for item in loaded)


def _read_config(path: Path) -> DictConfig | None:
    if not path.is_file():
        return None
    loaded = OmegaConf.load(path)
    return loaded if isinstance(loaded, DictConfig) else None


def _read_status(path: Path) -> tuple[str, str | None]:
    """(FAILED, error) from job_status.json; INCOMPLETE when there is none (killed job)."""
    if not path.is_file():
        return INCOMPLETE, f"no {RESULTS_FILE} and no {STATUS_FILE}: the job did not finish"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        return FAILED, f"unreadable {STATUS_FILE}: {err}"
    error = data.get("error")
    if data.get("status") == COMPLETED:  # returned, but never wrote results.json
        return FAILED, error or f"job returned without writing {RESULTS_FILE}"
    return FAILED, error


def _metric_value(value: Any) -> float:
    """A metric as a float; null (a metric a run could not compute) is nan, not an error."""
    return math.nan if value is None else float(value)


def _optimized_metric_of(config: DictConfig | None) -> str | None:
    value = _config_value(config, "optimized_metric")
    return None if value == "" else value


def _config_value(config: DictConfig | None, key: str) -> str:
    """The config's value at a dotted key as text; "" when absent or not resolvable."""
    if config is None:
        return ""
    try:
        value = OmegaConf.select(config, key)
    except OmegaConfBaseException:  # e.g. an interpolation into the hydra node
        return ""
    return "" if value is None else str(value)


def _product_predictions(job_dir: Path, results: Mapping[str, Any]) -> Path | None:
    """The predictions of the last chain point that has a predictions file."""
    files = results.get("predictions") or {}
    for point in reversed(results.get("chain") or list(files)):
        if point in files:
            return job_dir / files[point]
    return None
