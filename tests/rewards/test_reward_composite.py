"""RewardSet: weighted totals, per-component breakdowns, batch metrics, and build-time checks."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medrl.prompts import JsonFormat, XmlFormat
from medrl.rewards import REWARDS, RewardSet, build_reward_set, get_reward
from medrl.utils.config import CONFIG_DIR

SEED_001 = build_reward_set(
    {"json_valid": {"weight": 1.0}, "json_schema": {"weight": 1.0}, "correctness": {"weight": 1.0}}
)
# Seed 001's four example completions for a question whose gold answer is B.
PERFECT = '{"predicted_category": "B", "confidence": 0.9, "reason": "Vitamin B12 is in animals"}'
VALID_WRONG = '{"predicted_category": "A", "confidence": 0.6, "reason": "wrong answer"}'
MISSING_SCHEMA = '{"predicted_category": "B"}'
INVALID = "This is the answer: B"


@pytest.mark.parametrize(
    "completion, total, components",
    [
        (PERFECT, 3.0, {"json_valid": 1.0, "json_schema": 1.0, "correctness": 1.0}),
        (VALID_WRONG, 2.0, {"json_valid": 1.0, "json_schema": 1.0, "correctness": 0.0}),
        (MISSING_SCHEMA, 2.0, {"json_valid": 1.0, "json_schema": 0.0, "correctness": 1.0}),
        (INVALID, 0.0, {"json_valid": 0.0, "json_schema": 0.0, "correctness": 0.0}),
    ],
    ids=["perfect", "valid-wrong", "missing-schema", "invalid"],
)
def test_seed_001_examples_score_as_in_the_seed(make_sample, completion, total, components):
    breakdown = SEED_001.score(completion, make_sample(JsonFormat()))
    assert breakdown.total == total
    assert breakdown.components == components


def test_parse_ok_is_the_samples_strict_format_check(make_sample):
    sample = make_sample(JsonFormat())
    assert SEED_001.score(PERFECT, sample).parse_ok
    assert not SEED_001.score(MISSING_SCHEMA, sample).parse_ok


def test_total_is_the_weighted_sum_and_components_stay_unweighted(make_sample):
    rewards = build_reward_set(
        {"correctness": {"weight": 2.0}, "format": {"weight": 0.5}, "json_valid": {"weight": -1}}
    )
    breakdown = rewards.score(VALID_WRONG, make_sample(JsonFormat()))
    assert breakdown.components == {"correctness": 0.0, "format": 1.0, "json_valid": 1.0}
    assert breakdown.total == 2.0 * 0.0 + 0.5 * 1.0 - 1.0 * 1.0


def test_a_zero_weight_component_is_still_computed_and_reported(make_sample):
    rewards = build_reward_set({"correctness": {"weight": 1}, "format": {"weight": 0}})
    breakdown = rewards.score(PERFECT, make_sample(JsonFormat()))
    assert breakdown.total == 1.0 and breakdown.components["format"] == 1.0


def test_params_are_passed_to_the_component(make_sample):
    rewards = build_reward_set({"brevity": {"weight": 1.0, "target_tokens": 10, "max_tokens": 20}})
    assert rewards.score("B", make_sample(tokens=15)).total == 0.5


def test_score_batch_returns_totals_and_namespaced_metrics(make_sample):
    completions = [PERFECT, VALID_WRONG, MISSING_SCHEMA, INVALID]
    totals, metrics = SEED_001.score_batch(completions, [make_sample()] * 4)
    assert totals == [3.0, 2.0, 2.0, 0.0]
    assert metrics == pytest.approx(
        {
            "reward/total": 7.0 / 4,
            "reward/total_std": math.sqrt(4.75 / 4),  # population std of 3, 2, 2, 0
            "reward/json_valid": 3 / 4,
            "reward/json_schema": 2 / 4,
            "reward/correctness": 2 / 4,
            "reward/parse_fail": 2 / 4,  # MISSING_SCHEMA and INVALID fail the strict parse
        }
    )


def test_parse_fail_counts_malformed_output_per_sample_format(make_sample):
    rewards = build_reward_set({"correctness": {"weight": 1.0}})
    samples = [make_sample(XmlFormat()), make_sample(XmlFormat()), make_sample(JsonFormat())]
    completions = ["<answer>B</answer><explanation>x</explanation>", "B", PERFECT]
    _, metrics = rewards.score_batch(completions, samples)
    assert metrics["reward/parse_fail"] == pytest.approx(1 / 3)
    assert metrics["reward/correctness"] == pytest.approx(2 / 3)


def test_score_batch_with_mismatched_lengths_raises(make_sample):
    with pytest.raises(ValueError, match="2 completions but 1 samples"):
        SEED_001.score_batch([PERFECT, PERFECT], [make_sample()])


def test_score_batch_of_nothing_raises():
    with pytest.raises(ValueError, match="at least one"):
        SEED_001.score_batch([], [])


def test_malformed_output_scores_zero_instead_of_raising(make_sample):
    for completion in ["", "{", "<answer>", "\x00" * 10, "[" * 100_000]:
        assert SEED_001.score(completion, make_sample()).total == 0.0


# --- registry ---------------------------------------------------------------------------------


def test_registry_holds_every_documented_reward():
    documented = "correctness format json_valid json_schema explanation_length reasoning_tags"
    assert set(REWARDS) == {
        *documented.split(),
        "brevity",
        "token_efficiency",
        "token_f1",
        "rouge_l",
    }


def test_get_reward_returns_the_registered_function():
    assert get_reward("correctness") is REWARDS["correctness"]


def test_get_reward_with_an_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"'accuracy'.*valid names:.*'correctness'"):
        get_reward("accuracy")


# --- build-time validation --------------------------------------------------------------------


def test_unknown_reward_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown reward 'accuracy'; valid names: \[.*'brevity'"):
        build_reward_set({"accuracy": {"weight": 1.0}})


def test_missing_weight_names_the_reward():
    with pytest.raises(ValueError, match="reward 'format': missing 'weight'"):
        build_reward_set({"correctness": {"weight": 1.0}, "format": {}})


@pytest.mark.parametrize("weight", ["heavy", "1.0", True, None, float("nan"), float("inf"), [1]])
def test_non_numeric_or_non_finite_weight_names_the_reward(weight):
    with pytest.raises(ValueError, match="reward 'correctness': 'weight' must be a finite number"):
        build_reward_set({"correctness": {"weight": weight}})


def test_parameter_the_function_does_not_accept_is_named_with_the_accepted_ones():
    with pytest.raises(
        ValueError,
        match=r"reward 'explanation_length': unknown parameter\(s\) \['max_ful'\]; "
        r"it accepts \['min_full', 'max_full', 'min_partial'\]",
    ):
        build_reward_set({"explanation_length": {"weight": 1.0, "max_ful": 100}})


def test_parameter_given_to_a_reward_without_parameters_is_rejected():
    with pytest.raises(ValueError, match=r"'correctness'.*\['strict'\].*no parameters"):
        build_reward_set({"correctness": {"weight": 1.0, "strict": True}})


def test_inconsistent_parameter_values_fail_at_build_time():
    with pytest.raises(ValueError, match="target_tokens < max_tokens"):
        build_reward_set({"brevity": {"weight": 1.0, "target_tokens": 512}})


def test_component_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ValueError, match=r"reward 'format': expected a mapping"):
        build_reward_set({"format": 1.0})


@pytest.mark.parametrize("components", [{}, None, [("format", {"weight": 1})]])
def test_components_must_be_a_non_empty_mapping(components):
    with pytest.raises(ValueError, match="non-empty mapping"):
        build_reward_set(components)


# --- conf/reward ------------------------------------------------------------------------------

REWARD_YAMLS = sorted(p.stem for p in (CONFIG_DIR / "reward").glob("*.yaml"))


def test_the_documented_reward_sets_exist():
    assert {"xml", "json", "tags", "letter", "efficiency"} <= set(REWARD_YAMLS)


# Sets with judge_* components build only with a judge endpoint (tests/rewards/test_judge.py).
JUDGED_YAMLS = ["judge"]


@pytest.mark.parametrize("name", [n for n in REWARD_YAMLS if n not in JUDGED_YAMLS])
def test_each_reward_yaml_builds_a_reward_set(name):
    built = instantiate(OmegaConf.load(CONFIG_DIR / "reward" / f"{name}.yaml"))
    assert isinstance(built, RewardSet) and built.names


@pytest.mark.parametrize("name", JUDGED_YAMLS)
def test_a_judged_reward_yaml_without_a_judge_names_the_group_to_add(name):
    with pytest.raises(Exception, match="needs a judge endpoint: add judge=local"):
        instantiate(OmegaConf.load(CONFIG_DIR / "reward" / f"{name}.yaml"))


def test_reward_yaml_weights_are_overridable_from_the_command_line():
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("reward/json", overrides=["reward.components.correctness.weight=2"])
    finally:
        GlobalHydra.instance().clear()
    weights = {c.name: c.weight for c in instantiate(cfg.reward).components}
    assert weights == {"json_valid": 1.0, "json_schema": 1.0, "correctness": 2.0}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_component_value_is_refused_naming_the_component(make_sample, value):
    from medrl.rewards.composite import RewardComponent

    broken = RewardSet((RewardComponent("broken", lambda completion, sample: value, 1.0),))
    with pytest.raises(ValueError, match=r"reward 'broken' returned (nan|inf|-inf) for record"):
        broken.score("B", make_sample(XmlFormat()))
