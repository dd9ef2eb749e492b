"""trainer=deepspeed in preflight: without CUDA it is refused before anything is built, naming
trainer.accelerator (only the tests' explicit allow_cpu lets DeepSpeed's CPU accelerator in),
and so is every combination it cannot run, each naming its key. Nothing here imports
deepspeed: whether it is installed is one function, replaced where a test needs it."""

from __future__ import annotations

import pytest

from medrl.preflight import PreflightError, preflight_config
from medrl.train import run

DEEPSPEED = ["debug=smoke", "trainer=deepspeed"]
CPU_FOR_TESTS = ["trainer.accelerator=cpu", "trainer.strategy.allow_cpu=true"]


@pytest.fixture
def installed(monkeypatch):
    """deepspeed counts as installed (it is not, in the suite's main environment)."""
    monkeypatch.setattr("medrl.preflight.strategy.deepspeed_installed", lambda: True)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def failures(compose, *overrides: str) -> dict[str, str]:
    """{key: message} of the failed checks."""
    with pytest.raises(PreflightError) as caught:
        preflight_config(compose("train", [*DEEPSPEED, *overrides]))
    return {failure.key: failure.message for failure in caught.value.failures}


def strategy_results(compose, *overrides: str) -> list:
    results = preflight_config(compose("train", [*DEEPSPEED, *overrides]))
    return [r for r in results if r.name == "strategy"]


def test_without_cuda_trainer_deepspeed_is_refused_naming_the_accelerator(
    compose, installed, no_cuda
):
    failed = failures(compose)
    assert list(failed) == ["trainer.accelerator"]
    message = failed["trainer.accelerator"]
    assert "trainer.accelerator=gpu with trainer=deepspeed: no CUDA device" in message
    assert "trainer=cpu / ddp / fsdp" in message


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_a_cpu_accelerator_is_refused_unless_the_tests_opt_in(
    compose, installed, no_cuda, accelerator
):
    failed = failures(compose, f"trainer.accelerator={accelerator}")
    assert list(failed) == ["trainer.accelerator"]
    assert (
        f"trainer.accelerator={accelerator} with trainer=deepspeed" in failed["trainer.accelerator"]
    )
    assert "allow_cpu=true is for tests only" in failed["trainer.accelerator"]


def test_the_tests_opt_in_passes_every_deepspeed_check_on_a_cpu(compose, installed, no_cuda):
    strategy = strategy_results(compose, *CPU_FOR_TESTS)
    assert all(r.status == "pass" for r in strategy)
    keys = {r.key for r in strategy}
    # installed, accelerator, the strategy block (DeepSpeedSettings), QLoRA, precision, backend
    assert keys == {
        "trainer.strategy",
        "trainer.accelerator",
        "adapter",
        "trainer.precision",
        "trainer.strategy.process_group_backend",
    }
    assert "trainer.strategy: every setting valid" in [r.message for r in strategy]
    assert any("allow_cpu=true (tests" in r.message for r in strategy)


def test_with_cuda_the_gpu_accelerator_passes(compose, installed, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    strategy = strategy_results(compose, "trainer.strategy.stage=3", "trainer.precision=bf16-mixed")
    assert all(r.status == "pass" for r in strategy), [r.message for r in strategy]


def test_deepspeed_not_installed_is_refused_naming_the_install(compose, monkeypatch):
    monkeypatch.setattr("medrl.preflight.strategy.deepspeed_installed", lambda: False)
    failed = failures(compose, *CPU_FOR_TESTS)
    assert list(failed) == ["trainer.strategy"]
    assert "make install-deepspeed" in failed["trainer.strategy"]


def test_qlora_under_deepspeed_fails_naming_both_ways_out(compose, installed):
    failed = failures(compose, *CPU_FOR_TESTS, "adapter=qlora")
    assert list(failed) == ["adapter"]
    assert "cannot partition bitsandbytes' packed 4-bit weights" in failed["adapter"]
    assert (
        "adapter=lora with trainer=deepspeed, or adapter=qlora with trainer=ddp"
        in (failed["adapter"])
    )


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["trainer.strategy.stage=0"], "trainer.strategy.stage", "[1, 2, 3]"),
        (
            ["trainer.strategy.offload_parameters=true"],
            "trainer.strategy.offload_parameters",
            "only ZeRO-3 partitions the weights",
        ),
        (
            ["trainer.strategy.stage=1"],
            "trainer.strategy.overlap_comm",
            "set trainer.strategy.overlap_comm=false with trainer.strategy.stage=1",
        ),
        (["trainer.strategy.reduce_bucket_size=0"], "trainer.strategy.reduce_bucket_size", ">= 1"),
        (["trainer.precision=16-mixed"], "trainer.precision", "32-true or bf16-mixed"),
        (
            ["trainer.strategy.process_group_backend=nccl"],
            "trainer.strategy.process_group_backend",
            "gloo",
        ),
    ],
)
def test_each_setting_deepspeed_cannot_run_with_fails_naming_its_key(
    compose, installed, overrides, key, words
):
    failed = failures(compose, *CPU_FOR_TESTS, *overrides)
    assert list(failed) == [key]
    assert words in failed[key]


def test_parameter_offload_passes_with_stage_3(compose, installed):
    overrides = ["trainer.strategy.stage=3", "trainer.strategy.offload_parameters=true"]
    assert all(r.status == "pass" for r in strategy_results(compose, *CPU_FOR_TESTS, *overrides))


@pytest.mark.parametrize("name", ["deepspeed", "deepspeed_stage_3"])
def test_lightnings_own_deepspeed_is_refused_for_medrls(compose, name):
    with pytest.raises(PreflightError) as caught:
        preflight_config(
            compose("train", ["debug=smoke", "trainer=ddp", f"trainer.strategy={name}"])
        )
    failed = {f.key: f.message for f in caught.value.failures}
    assert list(failed) == ["trainer.strategy"]
    assert "use trainer=deepspeed (medrl.deepspeed_strategy" in failed["trainer.strategy"]


def test_the_refusal_comes_before_anything_is_built(compose, installed, no_cuda, monkeypatch):
    def must_not_run(*_):
        raise AssertionError("specs were built before the config checks")

    monkeypatch.setattr("medrl.train.build_specs", must_not_run)
    monkeypatch.setattr("medrl.distributed.launch", must_not_run)
    with pytest.raises(PreflightError, match=r"trainer\.accelerator=gpu with trainer=deepspeed"):
        run(compose("train", DEEPSPEED))


def test_evaluation_alone_does_not_check_the_strategy(compose, no_cuda):
    cfg = compose("train", [*DEEPSPEED, "stages=[eval]"])
    assert not [r for r in preflight_config(cfg) if r.name == "strategy"]


def test_stage_1_passes_without_overlapped_reduction(compose, installed):
    overrides = ["trainer.strategy.stage=1", "trainer.strategy.overlap_comm=false"]
    assert all(r.status == "pass" for r in strategy_results(compose, *CPU_FOR_TESTS, *overrides))


def test_the_strategy_raises_the_problem_preflight_reports(compose, installed):
    """One validation of trainer.strategy: building the strategy names the same key, in the
    same words, as preflight's failure."""
    from hydra.utils import instantiate

    from medrl.utils.settings import SettingsError

    failed = failures(compose, *CPU_FOR_TESTS, "trainer.strategy.stage=1")
    cfg = compose("train", ["trainer=deepspeed", "trainer.strategy.stage=1"])
    with pytest.raises(Exception) as built:
        instantiate(cfg.trainer.strategy)
    error = built.value.__cause__ or built.value
    assert isinstance(error, SettingsError)
    assert str(error) == failed["trainer.strategy.overlap_comm"]
