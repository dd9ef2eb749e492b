"""Strategy checks: combinations that cannot train under FSDP fail before any process starts,
each naming the setting to change."""

from __future__ import annotations

import pytest

from medrl.preflight import PreflightError, preflight_config

FSDP = ["debug=smoke", "trainer=fsdp", "trainer.accelerator=cpu"]


def failures(compose, *overrides: str) -> dict[str, str]:
    """{key: message} of the failed checks."""
    with pytest.raises(PreflightError) as caught:
        preflight_config(compose("train", [*FSDP, *overrides]))
    return {failure.key: failure.message for failure in caught.value.failures}


def test_trainer_fsdp_with_lora_passes(compose):
    results = preflight_config(compose("train", FSDP))
    strategy = [r for r in results if r.name == "strategy"]
    assert len(strategy) == 6 and all(r.status == "pass" for r in strategy)


def test_fsdp_on_one_process_is_refused_naming_the_device_count(compose):
    """One process shards nothing, and torch's NO_SHARD fallback fails on tied weights at the
    second update (seen on the tiny Qwen3): refused before any weights load."""
    failed = failures(compose, "trainer.devices=1")
    assert list(failed) == ["trainer.devices"]
    assert "trainer.devices=1 with trainer=fsdp" in failed["trainer.devices"]
    assert "use trainer=gpu (or cpu) for one device" in failed["trainer.devices"]


def test_qlora_under_fsdp_fails_naming_both_ways_out(compose):
    failed = failures(compose, "adapter=qlora")
    assert list(failed) == ["adapter"]
    assert "Cannot flatten integer dtype tensors" in failed["adapter"]
    assert (
        "use adapter=lora with trainer=fsdp, or adapter=qlora with trainer=ddp" in failed["adapter"]
    )


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("trainer.strategy.use_orig_params=false", "trainer.strategy.use_orig_params", "true"),
        ("trainer.strategy.state_dict_type=sharded", "trainer.strategy.state_dict_type", "full"),
        (
            "trainer.strategy.sharding_strategy=HYBRID_SHARD",
            "trainer.strategy.sharding_strategy",
            "device mesh",
        ),
        (
            "trainer.strategy.process_group_backend=nccl",
            "trainer.strategy.process_group_backend",
            "gloo",
        ),
    ],
)
def test_each_setting_fsdp_cannot_run_with_fails_naming_its_key(compose, override, key, words):
    failed = failures(compose, override)
    assert list(failed) == [key]
    assert words in failed[key]


def test_lightnings_own_fsdp_is_refused_for_medrls(compose):
    failed = failures(compose, "trainer=ddp", "trainer.strategy=fsdp")
    assert "use trainer=fsdp (medrl.sharding.PolicyFSDPStrategy)" in failed["trainer.strategy"]


def test_evaluation_alone_does_not_check_the_strategy(compose):
    cfg = compose("train", [*FSDP, "adapter=qlora", "stages=[eval]"])
    assert not [r for r in preflight_config(cfg) if r.name == "strategy"]
