"""The judge check: before any weights load, the judge endpoint answers, and on the pool's
first records each judge reward scores the gold reference above a wrong answer.

A judge that cannot tell a right answer from a wrong one would train the policy on noise; this
shows it on three real records before hours of GRPO. `judge.preflight` decides what a judge
that fails the comparison does: fail (default) | warn | off. An endpoint that does not answer
always fails (the run would score every completion as a judge failure).
"""

from __future__ import annotations

from collections.abc import Sequence

from medrl.data.records import QARecord
from medrl.preflight.report import CheckResult, failed, passed, skipped, warned
from medrl.preflight.rewards import wrong_answer
from medrl.prompts.base import OutputFormat
from medrl.rewards import RewardSample, RewardSet
from medrl.rewards.judge import JudgeFailureError

RECORDS = 3  # records compared per judge reward


def judge_checks(
    rewards: RewardSet, output_format: OutputFormat, records: Sequence[QARecord], mode: str
) -> list[CheckResult]:
    """One result for the endpoint, then one per judge reward (none without judge rewards)."""
    judges = rewards.judges
    if not judges:
        return []
    if mode == "off":
        return [skipped("judge", "judge.preflight=off", "judge.preflight")]
    client = judges[0].fn.client  # one client per reward set
    try:
        model = client.model
    except (ConnectionError, ValueError) as error:
        return [failed("judge", f"judge endpoint: {error}", "judge.settings.base_url")]
    results = [passed("judge", f"judge endpoint {client.settings.base_url} serves {model}")]
    pairs = _gold_and_wrong(output_format, records[: RECORDS + 1])
    if not pairs:
        return [*results, skipped("judge", "no record with a wrong answer to compare")]
    for component in judges:
        results.append(_compare(component.name, component.fn, output_format, pairs, mode))
    return results


def _gold_and_wrong(output_format: OutputFormat, records: Sequence[QARecord]):
    """[(record, gold text, wrong text)] for up to RECORDS records."""
    pairs = []
    for i, record in enumerate(records[:RECORDS]):
        other = records[(i + 1) % len(records)] if len(records) > 1 else None
        wrong = wrong_answer(output_format, record, other)
        if wrong is not None:
            gold_text = output_format.render_target(record)
            pairs.append((record, gold_text, output_format.render_target(wrong[1])))
    return pairs


def _compare(name, judge, output_format, pairs, mode: str) -> CheckResult:
    samples = [RewardSample(record, output_format) for record, _, _ in pairs]
    texts = [gold for _, gold, _ in pairs] + [wrong for _, _, wrong in pairs]
    try:
        batch = judge.score_many(texts, samples + samples)
    except JudgeFailureError as error:  # judge.on_failure=raise
        return failed("judge", f"{name}: {error}", "judge.settings")
    n = len(pairs)
    gold, wrong = batch.scores[:n], batch.scores[n:]
    failures = sorted({f for f in batch.failures if f})
    shown = ", ".join(f"{g:.2f} vs {w:.2f}" for g, w in zip(gold, wrong, strict=True))
    where = f"{name} (rubric {judge.rubric.name} v{judge.rubric.version})"
    if failures:
        message = (
            f"{where}: the judge failed ({', '.join(failures)}) on the gold / wrong answers of "
            f"{n} records; see the judge server's log, judge.settings.timeout_s, max_tokens"
        )
        return failed("judge", message, "judge.settings")
    above = sum(g > w for g, w in zip(gold, wrong, strict=True))
    message = (
        f"{where}: gold above a wrong answer on {above} of {n} records (gold vs wrong: {shown})"
    )
    if above == n:
        return passed("judge", message, "judge")
    advice = (
        "; the judge cannot tell right from wrong here: use a stronger judge "
        "(judge.settings.model, judge=hosted), or judge.preflight=warn to train anyway"
    )
    report = warned if mode == "warn" else failed
    return report("judge", message + advice, "judge.preflight")
