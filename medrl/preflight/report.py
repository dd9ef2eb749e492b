"""What preflight found: one result per check, the prompts it rendered, and the one error that
lists every failure, so a user fixes all of them in one round instead of one per run."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrl.utils.io import write_atomic

log = logging.getLogger(__name__)

STATUSES = ("pass", "fail", "warn", "skip")
REPORT_FILE = "preflight.json"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict.

    name:    the check family (grpo, sft, evaluation, rewards, pools, reward_gold, context).
    status:  pass | fail | warn (the run goes on, but read it) | skip (could not run; says why).
    message: what was checked; a failure starts with ``key=value:`` and says what to change.
    key:     the config key to fix or look at; None when no single key applies.
    """

    name: str
    status: str
    message: str
    key: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")

    @property
    def ok(self) -> bool:
        """Only a failure stops the run; warnings and skips are reported and logged."""
        return self.status != "fail"


def passed(name: str, message: str, key: str | None = None) -> CheckResult:
    return CheckResult(name, "pass", message, key)


def failed(name: str, message: str, key: str | None = None) -> CheckResult:
    return CheckResult(name, "fail", message, key)


def warned(name: str, message: str, key: str | None = None) -> CheckResult:
    return CheckResult(name, "warn", message, key)


def skipped(name: str, message: str, key: str | None = None) -> CheckResult:
    return CheckResult(name, "skip", message, key)


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt exactly as the model will get it (template "chat"), or, when the tokenizer could
    not be had without loading weights, the documented plain template (template "plain")."""

    pool: str
    record_id: str
    text: str
    tokens: int | None
    template: str


class PreflightError(ValueError):
    """Every failed check at once, each line naming the config key to fix."""

    def __init__(self, failures: Sequence[CheckResult]) -> None:
        self.failures = list(failures)
        lines = "\n".join(f"  - {result.message}" for result in self.failures)
        super().__init__(
            f"preflight: {len(self.failures)} check(s) failed before any weights were loaded; "
            f"fix these config keys:\n{lines}"
        )


@dataclass
class PreflightReport:
    """All results of one preflight, and the prompts it showed."""

    results: list[CheckResult] = field(default_factory=list)
    prompts: list[RenderedPrompt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def with_status(self, status: str) -> list[CheckResult]:
        return [result for result in self.results if result.status == status]

    def raise_if_failed(self) -> None:
        failures = self.with_status("fail")
        if failures:
            raise PreflightError(failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": {status: len(self.with_status(status)) for status in STATUSES},
            "checks": [asdict(result) | {"ok": result.ok} for result in self.results],
            "prompts": [asdict(prompt) for prompt in self.prompts],
        }


def write_report(report: PreflightReport, output_dir: str | Path, stage: str | None = None) -> Path:
    """preflight.json in the run folder (preflight-<stage>.json for one stage's own checks):
    what was checked, for the user to read afterwards."""
    path = Path(output_dir) / REPORT_FILE
    if stage is not None:
        path = path.with_name(f"{path.stem}-{stage}{path.suffix}")
    return write_atomic(path, json.dumps(report.to_json(), indent=2))


def log_report(report: PreflightReport) -> None:
    """The prompts and every non-passing result to the log; failures are left to the error."""
    for number, prompt in enumerate(report.prompts, 1):
        tokens = "?" if prompt.tokens is None else prompt.tokens
        log.info(
            "preflight prompt %d/%d (pool %s, record %s, %s tokens, %s template):\n%s",
            number,
            len(report.prompts),
            prompt.pool,
            prompt.record_id,
            tokens,
            prompt.template,
            prompt.text,
        )
    for result in report.with_status("warn"):
        log.warning("preflight: %s", result.message)
    for result in report.with_status("skip"):
        log.info("preflight skipped a check: %s", result.message)
    counts = {status: len(report.with_status(status)) for status in STATUSES}
    log.info("preflight: %s", ", ".join(f"{n} {status}" for status, n in counts.items()))
