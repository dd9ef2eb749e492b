"""The judge: rubrics, score parsing, the cache, and failures counted with the documented score.

The failure cases talk to a small OpenAI-protocol HTTP server in this process whose reply is
set per test (the `scripted` fixture of tests/conftest.py: a non-score reply, an HTTP error, a
stall past the timeout) and to a port where nothing listens; the real `transformers serve`
judge runs in tests/reliability/test_judge_resume.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

import pytest

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
from medrl.prompts import FreeTextFormat, XmlFormat
from medrl.rewards import RewardSample, build_reward_set
from medrl.rewards.judge import (
    JudgeCache,
    JudgeClient,
    JudgeFailureError,
    JudgeRequest,
    JudgeReward,
    JudgeSettings,
    JudgeSetup,
    cache_key,
    load_rubric,
    parse_score,
    render_judge_messages,
)
from medrl.rewards.judge.setup import RUBRICS_DIR

RECORD = QARecord(
    id="pqa-1",
    question="Does aspirin reduce platelet aggregation?",
    options={label: label for label in YES_NO_MAYBE_LABELS},
    answer="yes",
    explanation="Aspirin irreversibly inhibits COX-1 and reduces platelet aggregation.",
    context="Fifty volunteers took aspirin; platelet aggregation fell by 80%.",
)
CORRECTNESS = load_rubric(RUBRICS_DIR / "correctness.yaml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(n: int, fmt=None) -> list[RewardSample]:
    return [RewardSample(RECORD, fmt or FreeTextFormat()) for _ in range(n)]


# --- rubrics and parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, score",
    [("5", 1.0), ("1", 0.0), (" 3 ", 0.5), ("Score: 4", 0.75), ("4/5", 0.75), ("2.", 0.25)],
)
def test_a_reply_that_is_one_integer_maps_to_the_unit_interval(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "reply", ["", "No", "6", "0", "4 because it is right", "1. The answer", None]
)
def test_anything_else_is_not_a_score(reply):
    assert parse_score(reply) is None


@pytest.mark.parametrize("name", ["correctness", "faithfulness", "relevancy"])
def test_every_rubric_file_loads_with_examples_of_both_ends(name):
    rubric = load_rubric(RUBRICS_DIR / f"{name}.yaml")
    assert rubric.name == name and rubric.version >= 1 and rubric.steps
    assert {example.score for example in rubric.examples} == {1, 5}


def test_the_judge_sees_the_rubric_the_examples_and_only_the_fields_it_needs():
    messages = render_judge_messages(CORRECTNESS, RECORD, "It does.")
    assert messages[0]["role"] == "system" and CORRECTNESS.criteria in messages[0]["content"]
    roles = [m["role"] for m in messages[1:]]
    assert roles == ["user", "assistant"] * len(CORRECTNESS.examples) + ["user"]
    case = messages[-1]["content"]
    assert f"Reference answer: {RECORD.explanation}" in case and "Answer to grade: It does." in case
    assert "Context:" not in case, "correctness does not need the abstract"
    faithfulness = load_rubric(RUBRICS_DIR / "faithfulness.yaml")
    case = render_judge_messages(faithfulness, RECORD, "It does.")[-1]["content"]
    assert case.startswith(f"Context:\n{RECORD.context}") and "Reference answer" not in case


# --- the cache ----------------------------------------------------------------------------------


def test_the_cache_key_changes_with_model_rubric_version_reference_and_answer():
    key = cache_key("m", CORRECTNESS, RECORD, "a")
    assert key == cache_key("m", CORRECTNESS, RECORD, "a")
    assert key != cache_key("other", CORRECTNESS, RECORD, "a")
    assert key != cache_key("m", replace(CORRECTNESS, version=2), RECORD, "a")
    assert key != cache_key("m", CORRECTNESS, replace(RECORD, explanation="x"), "a")
    assert key != cache_key("m", CORRECTNESS, RECORD, "b")
    # correctness does not show the context, so the context is not part of its key
    assert key == cache_key("m", CORRECTNESS, replace(RECORD, context="x"), "a")


def test_verdicts_are_cached_in_the_file_and_replayed_without_asking(scripted, tmp_path):
    settings = scripted(reply="4")
    cache_file = tmp_path / "judge" / "cache.jsonl"
    first = JudgeClient(settings, JudgeCache(cache_file))
    verdicts = first.judge(CORRECTNESS, [JudgeRequest(RECORD, "a"), JudgeRequest(RECORD, "b")])
    assert [v.score for v in verdicts] == [0.75, 0.75]
    with cache_file.open("a") as handle:
        handle.write('{"key": "torn')  # a crash mid-write leaves a torn last line
    down = replace(settings, base_url=f"http://127.0.0.1:{free_port()}/v1", model="judge-model")
    again = JudgeClient(down, JudgeCache(cache_file))  # nothing listens: only the cache answers
    assert again.judge(CORRECTNESS, [JudgeRequest(RECORD, "b")]) == verdicts[1:]


# --- failures -----------------------------------------------------------------------------------


def judge_reward(settings: JudgeSettings, on_failure: str = "batch_mean") -> JudgeReward:
    return JudgeReward(CORRECTNESS, JudgeClient(settings), on_failure)


@pytest.mark.parametrize(
    "script, failure",
    [
        ({"reply": "The answer is medically correct."}, "unparsed"),
        ({"status": 500}, "refused"),
        ({"status": 400}, "refused"),
        ({"sleep": 3}, "timeout"),
    ],
)
def test_each_failure_is_counted_and_scored_zero_or_by_the_batch(scripted, script, failure):
    reward = judge_reward(scripted(**script), on_failure="zero")
    batch = reward.score_many(["It does.", "It does not."], samples(2))
    assert batch.failures == [failure, failure] and batch.scores == [0.0, 0.0]
    assert batch.metrics("judge_correctness")["reward/judge_correctness_judge_fail"] == 1.0
    mean = judge_reward(scripted(**script)).score_many(["It does."], samples(1))
    assert mean.scores == [0.5], "no judgement succeeded: the neutral 0.5"


def test_a_server_that_is_down_is_counted_not_raised():
    settings = JudgeSettings(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2, retries=0)
    batch = judge_reward(settings).score_many(["It does."], samples(1))
    assert batch.failures == ["unreachable"] and batch.scores == [0.5]
    pinned = replace(settings, model="judge-model")  # the model known: failed per request
    assert judge_reward(pinned).score_many(["x"], samples(1)).failures == ["unreachable"]


def test_batch_mean_gives_a_failure_the_mean_of_the_successful_scores(scripted):
    settings = scripted(reply="5")
    reward = judge_reward(settings)
    ok = reward.score_many(["It does.", "Yes."], samples(2))
    assert ok.scores == [1.0, 1.0] and ok.failures == [None, None]
    # a completion that does not parse is a format failure: 0, and the judge is not asked
    unparsed = reward.score_many(["   ", "It does."], samples(2))
    assert unparsed.scores == [0.0, 1.0] and unparsed.failures == [None, None]


def test_on_failure_raise_stops_with_the_failure_named(scripted):
    reward = judge_reward(scripted(reply="maybe"), on_failure="raise")
    with pytest.raises(JudgeFailureError, match="unparsed on record 'pqa-1'.*'maybe'"):
        reward.score_many(["It does."], samples(1))


def test_all_completions_of_a_batch_are_asked_concurrently(scripted):
    settings = replace(scripted(reply="3", sleep=0.5), concurrency=8, timeout_s=10)
    started = time.perf_counter()
    batch = judge_reward(settings).score_many([f"answer {i}" for i in range(8)], samples(8))
    assert batch.scores == [0.5] * 8
    assert time.perf_counter() - started < 8 * 0.5, "eight 0.5 s requests ran one at a time"


def test_closed_formats_are_judged_on_the_whole_completion(scripted):
    settings = scripted(reply="5")
    client = JudgeClient(settings)
    completion = "<answer>yes</answer><explanation>It inhibits COX-1.</explanation>"
    JudgeReward(CORRECTNESS, client).score_many([completion], samples(1, XmlFormat()))
    assert len(client.cache) == 1
    key = cache_key("judge-model", CORRECTNESS, RECORD, completion)
    assert client.cache.get(key)["score"] == 1.0


def test_a_reward_set_with_judges_logs_the_failure_rate(scripted):
    setup = JudgeSetup(settings=scripted(reply="nonsense"))
    rewards = build_reward_set(
        {"judge_correctness": {"weight": 1.0}, "token_f1": {"weight": 1.0}}, judge_setup=setup
    )
    totals, metrics = rewards.score_batch(["It does."], samples(1))
    assert (
        metrics["reward/judge_fail"] == 1.0
        and metrics["reward/judge_correctness_judge_fail"] == 1.0
    )
    assert totals == [0.5 + metrics["reward/token_f1"]]


def test_judge_setup_refuses_unknown_policies():
    settings = JudgeSettings(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="judge.on_failure"):
        JudgeSetup(settings, on_failure="retry")
    with pytest.raises(ValueError, match="judge.preflight"):
        JudgeSetup(settings, preflight="maybe")


def test_judging_from_inside_a_running_event_loop_works(scripted):
    # a notebook or an async caller: asyncio.run alone would refuse
    reward = judge_reward(scripted(reply="5"))

    async def inside_a_loop():
        return reward.score_many(["It does."], samples(1))

    assert asyncio.run(inside_a_loop()).scores == [1.0]


def test_each_process_appends_to_its_own_file_and_every_process_reads_all(tmp_path):
    path = tmp_path / "judge" / "cache.jsonl"
    JudgeCache(path, rank=0).put_many([("a", {"score": 1.0, "reply": "5", "failure": None})])
    JudgeCache(path, rank=1).put_many([("b", {"score": 0.0, "reply": "1", "failure": None})])

    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.jsonl", "cache.rank1.jsonl"]
    for rank in (0, 1, 2):
        cache = JudgeCache(path, rank=rank)
        assert len(cache) == 2 and cache.get("b")["score"] == 0.0
