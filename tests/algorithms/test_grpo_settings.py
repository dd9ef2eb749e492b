"""One validation of grpo.module: the settings blocks check themselves, grpo_problems checks the
block as a whole, and GRPOModule and preflight report the same problems by the same keys."""

from __future__ import annotations

import pytest

from medrl.algorithms.grpo_settings import (
    AdvantageSettings,
    ClipSettings,
    DynamicSampling,
    EntropySettings,
    KLSettings,
    SequenceClipSettings,
    grpo_problems,
)
from medrl.preflight import PreflightError, preflight_config
from medrl.utils.settings import SettingsError

VALID = dict(
    prompts_per_step=4,
    group_size=4,
    mu=1,
    micro_batch_size=4,
    lr=5e-6,
    weight_decay=0.0,
    warmup_ratio=0.0,
    scheduler="constant",
    grad_clip=1.0,
    mask_truncated=False,
    sample_table_every=10,
    loss_aggregation="seq_mean_token_mean",
    importance_sampling="token",
    policy_loss="clip",
)


def keys(problems) -> list[str]:
    return [p.key for p in problems]


def test_the_defaults_are_valid():
    assert grpo_problems(VALID) == []
    built = dict(VALID, advantage=AdvantageSettings(), clip=ClipSettings(), kl=KLSettings())
    assert grpo_problems(built, world_size=4) == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClipSettings(eps_low=0), "grpo.module.clip.eps_low=0: must be in (0, 1]"),
        (
            lambda: ClipSettings(dual_clip=1.0),
            "grpo.module.clip.dual_clip=1.0: must be null or > 1",
        ),
        (lambda: SequenceClipSettings(eps_high=-1), "grpo.module.sequence_clip.eps_high=-1"),
        (lambda: KLSettings(estimator="k4"), "grpo.module.kl.estimator=k4: must be one of"),
        (lambda: EntropySettings(coef=True), "grpo.module.entropy.coef=true: must be a number"),
        (lambda: AdvantageSettings(std_scope="global"), "grpo.module.advantage.std_scope=global"),
        (lambda: DynamicSampling(max_extra_draws=-1), "dynamic_sampling.max_extra_draws=-1"),
    ],
)
def test_a_block_built_with_a_bad_value_raises_naming_its_config_key(build, message):
    with pytest.raises(SettingsError) as caught:
        build()
    assert message in str(caught.value)


def test_every_problem_is_reported_at_once_and_raw_blocks_take_their_defaults():
    values = dict(VALID, mu=0, clip={"eps_low": 2.0}, kl={"beta": -1})
    problems = grpo_problems(values)
    assert keys(problems) == ["mu", "clip.eps_low", "kl.beta"]
    assert problems[1].message("grpo.module.") == (
        "grpo.module.clip.eps_low=2.0: must be in (0, 1]: the ratio is clipped below at 1 - eps_low"
    )


def test_an_unknown_key_of_a_block_is_named_with_the_valid_ones():
    (problem,) = grpo_problems(dict(VALID, clip={"eps_lo": 0.1}))
    assert problem.key == "clip.eps_lo"
    assert "is not a setting of clip; valid: ['dual_clip', 'eps_high', 'eps_low']" in (
        problem.message()
    )


def test_rules_between_settings_name_every_key_involved():
    (group,) = grpo_problems(dict(VALID, group_size=1))
    assert group.key == "group_size" and not group.warning
    (alone,) = grpo_problems(dict(VALID, group_size=1, advantage={"std_scope": "none"}))
    assert alone.warning and "every advantage is 0" in alone.requirement
    (dual,) = grpo_problems(dict(VALID, policy_loss="cispo", clip={"dual_clip": 3.0}))
    assert "applies to grpo.module.policy_loss=clip only" in dual.message("grpo.module.")
    (micro,) = grpo_problems(dict(VALID, micro_batch_size=3))
    assert micro.warning and "prompts_per_step * group_size = 4 * 4 = 16" in micro.message()


def test_the_rules_over_processes_run_only_with_a_world_size():
    odd = dict(VALID, prompts_per_step=3, dynamic_sampling={"enabled": True})
    assert grpo_problems(odd) == []
    assert keys(grpo_problems(odd, world_size=1)) == []
    assert keys(grpo_problems(odd, world_size=2)) == [
        "prompts_per_step",
        "dynamic_sampling.enabled",
    ]


@pytest.mark.parametrize(
    "override",
    [
        "grpo.module.clip.eps_low=0",
        "grpo.module.group_size=1",
        "grpo.module.kl.estimator=k9",
        "grpo.module.lr=0",
    ],
)
def test_preflight_and_the_module_report_the_same_problem(compose, tiny_spec, override):
    """preflight's failure message is the module's error message, word for word: one check,
    whether it runs before anything loads or when the stage builds the module."""
    from hydra.utils import instantiate

    from medrl.data.records import QARecord
    from medrl.models import LoraAdapter, load_policy
    from medrl.prompts import XmlFormat

    cfg = compose("train", ["debug=smoke", override])
    with pytest.raises(PreflightError) as preflight:
        preflight_config(cfg)
    (failure,) = preflight.value.failures
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    record = QARecord(id="q", question="Q?", options={"A": "a", "B": "b"}, answer="A")
    with pytest.raises(Exception) as built:  # a block fails as Hydra builds it, the rest here
        instantiate(cfg.grpo.module)(
            model=policy.model,
            tokenizer=policy.tokenizer,
            prompts=[record],
            rewards=None,
            output_format=XmlFormat(),
        )
    error = built.value.__cause__ or built.value
    assert isinstance(error, SettingsError)
    assert failure.message in str(error)
