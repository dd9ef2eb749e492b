"""trainer=deepspeed (medrl.deepspeed_strategy) trains SFT and GRPO for 2 steps each under ZeRO-2
and ZeRO-3 on 2 CPU processes (DeepSpeed's CPU accelerator, gloo; the tests' opt-in
trainer.strategy.allow_cpu=true), and computes what one process computes without DeepSpeed on
the same batches: the same losses, gradient norms and updates. Its stage checkpoints hold the
whole trained weights (gathered from ZeRO-3's partitions) and load with their lineage checks,
and a GRPO stage resumed from DeepSpeed's training-state folder ends where the straight run
ends.

Each run is `python -m medrl.train` (a subprocess; Lightning starts the second process): an
SFT run, then a GRPO run from its stage checkpoint (init_from, which checks the checkpoint's
weights against its manifest). Not one sft -> grpo run: GRPO's fresh LoRA draws its initial
weights from the global random stream, which Lightning re-seeds when a distributed strategy
sets up, so a chained run's GRPO starts from other adapters than one process's (seen here).
Skipped where deepspeed is not installed (`make install-deepspeed`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_outputs import adapter, metric_rows
from run_outputs import train as run_smoke  # this folder's runs

from medrl.checkpoints import load_checkpoint
from medrl.checkpoints.training_state import latest_readable

pytest.importorskip("deepspeed", reason="deepspeed is not installed (make install-deepspeed)")

# On top of the smoke run (run_outputs.SMOKE_RUN): a training state after every step.
COMMON = [
    "checkpointing.every_n_steps=1",
    "checkpointing.keep_after_stage=true",
]
# 2 updates each. SFT: global batches of 2 (1 per process), 2 of them accumulated per update.
SFT = ["stages=[sft]", "sft.grad_accum=2"]
# GRPO: 2 prompts x G=2, one prompt per process in micro-batches of 1 completion, so each
# update adds 2 backward passes; a bound of 0.1 clips every update (the norms are ~0.7).
GRPO = [
    "stages=[grpo]",
    "grpo.module.micro_batch_size=1",
    "grpo.module.grad_clip=0.1",
    "grpo.module.lr=1e-2",
]
GRPO_KEYS = ["reward/total", "loss/loss", "loss/kl", "train/grad_norm", "train/entropy"]


def deepspeed(stage: int) -> list[str]:
    return [
        "trainer=deepspeed",
        "trainer.accelerator=cpu",
        "trainer.strategy.allow_cpu=true",
        "trainer.devices=2",
        f"trainer.strategy.stage={stage}",
    ]


def train(run_dir: Path, overrides: list[str]) -> Path:
    return run_smoke(run_dir, [*COMMON, *overrides], timeout_s=600)


def sft_then_grpo(tmp_path_factory, name: str, strategy: list[str]) -> dict[str, Path]:
    """{"sft": an SFT run's folder, "grpo": a GRPO run's, from that SFT stage checkpoint}."""
    sft = train(tmp_path_factory.mktemp(f"{name}_sft"), [*SFT, *strategy])
    start = f"init_from={sft / 'checkpoints' / 'sft'}"
    grpo = train(tmp_path_factory.mktemp(f"{name}_grpo"), [*GRPO, start, *strategy])
    return {"sft": sft, "grpo": grpo}


@pytest.fixture(scope="module")
def plain(tmp_path_factory, shared_dir) -> dict[str, Path]:
    """The same runs on one process, without DeepSpeed."""
    return sft_then_grpo(tmp_path_factory, "plain", [])


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def zero(request, tmp_path_factory, shared_dir) -> tuple[int, dict[str, Path]]:
    stage = request.param
    return stage, sft_then_grpo(tmp_path_factory, f"zero{stage}", deepspeed(stage))


def assert_close(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor]) -> None:
    """Every tensor equal within 1e-3 of its norm (sums in another order over two processes:
    Adam's first steps move a weight by about lr x sign(gradient))."""
    assert one.keys() == two.keys()
    for name in one:
        gap = torch.linalg.vector_norm(two[name].float() - one[name].float()).item()
        assert gap <= 1e-3 * torch.linalg.vector_norm(one[name].float()).item() + 1e-7, name


def test_sft_under_zero_trains_as_one_process_does(plain, zero):
    _, runs = zero
    for key in ("train/loss", "val/loss"):
        ones, zeros = metric_rows(plain["sft"], "sft", key), metric_rows(runs["sft"], "sft", key)
        assert len(ones) == len(zeros) > 0, key
        assert zeros == pytest.approx(ones, rel=1e-5), key
    assert metric_rows(runs["sft"], "sft", "faults/skipped_updates") == [0.0, 0.0]
    trained = adapter(runs["sft"], "sft")
    assert_close(adapter(plain["sft"], "sft"), trained)
    # LoRA's B starts at 0: a non-zero B shows the 2 updates moved the weights.
    assert max(t.abs().max().item() for n, t in trained.items() if "lora_B" in n) > 1e-4


def test_grpo_under_zero_trains_as_one_process_does(plain, zero):
    """Micro-batches accumulate (ZeRO-3 kept only the last one's gradients until
    start_micro_batch: the norms differed) and DeepSpeed clips to grpo.module.grad_clip."""
    _, runs = zero
    one, run = plain["grpo"], runs["grpo"]
    for key in GRPO_KEYS:
        ones, zeros = metric_rows(one, "grpo", key), metric_rows(run, "grpo", key)
        assert len(ones) == len(zeros) == 2, key
        assert zeros == pytest.approx(ones, rel=1e-4, abs=1e-7), key
    assert min(metric_rows(run, "grpo", "train/grad_norm")) > 0.1, "the bound must clip"
    assert metric_rows(one, "grpo", "adv/std")[0] > 0, "the run must carry a signal"
    trained = adapter(run, "grpo")
    assert_close(adapter(one, "grpo"), trained)
    assert max(t.abs().max().item() for n, t in trained.items() if "lora_B" in n) > 1e-4


def test_stage_checkpoints_hold_the_whole_trained_weights_and_load(plain, zero):
    """Both forms load with their lineage checks (the merged weights' hash, the parent's);
    the merged weights are the one-process run's, every tensor whole (ZeRO-3 gathers them),
    and differ from the SFT checkpoint GRPO started from where LoRA trained."""
    _, runs = zero
    folder = runs["grpo"] / "checkpoints" / "grpo"
    merged, _, manifest = load_checkpoint(folder, "merged")
    assert manifest.parent.location == str(runs["sft"] / "checkpoints" / "sft")
    one, _, _ = load_checkpoint(plain["grpo"] / "checkpoints" / "grpo", "merged")
    assert_close(one.state_dict(), merged.state_dict())
    start, _, _ = load_checkpoint(runs["sft"] / "checkpoints" / "sft", "merged")
    before = start.state_dict()
    changed = [n for n, t in merged.state_dict().items() if not torch.equal(t, before[n])]
    targets = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")
    assert changed and all(name.endswith(targets) for name in changed)
    with_adapter, _, _ = load_checkpoint(folder, "adapter")
    ids = torch.tensor([[5, 17, 33, 2, 61]])
    with torch.no_grad():
        expected, got = merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_deepspeed_runs_with_medrls_accumulation_and_each_stages_clipping(zero):
    """Every backward adds to the update and every step is one (DeepSpeed's own counter off);
    the bound is sft.grad_clip (the Trainer's) for SFT and grpo.module.grad_clip for GRPO."""
    stage, runs = zero
    for name, clip in (("sft", 1.0), ("grpo", 0.1)):
        line = next(
            line
            for line in (runs[name] / "train.log").read_text().splitlines()
            if "DeepSpeed config: " in line
        )
        config = json.loads(line.split("DeepSpeed config: ", 1)[1])
        assert config["gradient_clipping"] == clip, name
        assert config["gradient_accumulation_steps"] == 1, name
        assert config["managed_gradient_accumulation"] is False, name
        assert config["zero_optimization"]["stage"] == stage, name


def test_training_state_is_deepspeeds_partitioned_folder(zero):
    """The training-state checkpoint is DeepSpeed's folder, renamed into place whole: one
    optimizer-state partition per process (both stages) and, under ZeRO-3, one weight
    partition per process too."""
    stage, runs = zero
    latest = latest_readable(runs["grpo"] / "resume" / "grpo")
    assert latest is not None and latest.name == "step-000002.ckpt" and latest.is_dir()
    files = {p.name for p in (latest / "checkpoint").iterdir()}
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= files
    if stage == 3:
        assert {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)} <= files
    else:
        assert "mp_rank_00_model_states.pt" in files
    assert not list(latest.parent.glob(".step-*.tmp")), "no staging folder is left behind"


def test_grpo_resumed_from_deepspeeds_training_state_ends_as_the_straight_run(zero, tmp_path):
    """The GRPO run's folder as it was after its first update (step-1 state written):
    resume=auto continues from DeepSpeed's folder and ends with the straight run's weights,
    to the bit, and its second step's figures."""
    stage, runs = zero
    if stage != 3:
        pytest.skip("one resume suffices: ZeRO-3 partitions weights and optimizer states")
    straight, resumed = runs["grpo"], tmp_path / "resumed"
    shutil.copytree(straight / "resume", resumed / "resume")
    shutil.rmtree(resumed / "resume" / "grpo" / "step-000002.ckpt")
    start = f"init_from={runs['sft'] / 'checkpoints' / 'sft'}"
    train(resumed, [*GRPO, start, *deepspeed(stage), "resume=auto"])
    for key in GRPO_KEYS:
        again = metric_rows(resumed, "grpo_resumed", key)
        assert again == pytest.approx(metric_rows(straight, "grpo", key)[1:], rel=1e-6), key

    def weights_hash(folder: Path) -> str:
        manifest = folder / "checkpoints" / "grpo" / "manifest.json"
        return json.loads(manifest.read_text())["weights_hash"]

    assert weights_hash(resumed) == weights_hash(straight)


# --- the strategy alone (no process group) --------------------------------------------------


def test_the_strategy_builds_deepspeeds_config_from_its_keys():
    from medrl.deepspeed_strategy import PolicyDeepSpeedStrategy

    strategy = PolicyDeepSpeedStrategy(stage=3, offload_parameters=True, reduce_bucket_size=5)
    zero = strategy.config["zero_optimization"]
    assert (zero["stage"], zero["reduce_bucket_size"]) == (3, 5)
    assert zero["offload_param"] == {"device": "cpu"} and "offload_optimizer" not in zero
    assert strategy.config["zero_allow_untested_optimizer"] is True  # torch's AdamW
    assert strategy.zero_stage_3 and not strategy.handles_gradient_accumulation
    with pytest.raises(ValueError, match=r"trainer\.strategy\.stage=4"):
        PolicyDeepSpeedStrategy(stage=4)


def test_a_cpu_accelerator_without_the_opt_in_is_refused_when_preflight_was_skipped():
    from lightning.pytorch.accelerators import CPUAccelerator

    from medrl.deepspeed_strategy import PolicyDeepSpeedStrategy

    strategy = PolicyDeepSpeedStrategy()
    strategy.accelerator = CPUAccelerator()
    with pytest.raises(RuntimeError, match=r"set trainer\.accelerator=gpu on a CUDA machine"):
        strategy.setup_environment()


def test_trained_weights_load_only_into_exactly_the_trainable_parameters():
    from medrl.deepspeed_strategy import load_trainable

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    model[1].requires_grad_(False)
    frozen = model[1].weight.clone()
    load_trainable(model, {"0.weight": torch.ones(2, 3), "0.bias": torch.zeros(2)})
    assert torch.equal(model[0].weight, torch.ones(2, 3)) and torch.equal(model[1].weight, frozen)
    with pytest.raises(RuntimeError, match=r"missing \['0.bias'\]"):
        load_trainable(model, {"0.weight": torch.ones(2, 3)})


def test_bf16_mixed_stage_checkpoints_hold_the_float32_weights(tmp_path_factory, shared_dir):
    """Under bf16-mixed DeepSpeed rounds the module's own weights to bfloat16 and keeps float32
    masters of the trainable ones: the stage checkpoint takes the adapters from the masters
    and every frozen weight from the start point, unrounded (one process, ZeRO-2)."""
    run = train(
        tmp_path_factory.mktemp("bf16"),
        [*SFT, *deepspeed(2), "trainer.devices=1", "trainer.precision=bf16-mixed"],
    )
    folder = run / "checkpoints" / "sft"
    trained = adapter(run, "sft")
    assert all(t.dtype == torch.float32 for t in trained.values())
    assert any(not torch.equal(t, t.bfloat16().float()) for t in trained.values()), (
        "the adapters are the float32 masters, not their bfloat16 roundings"
    )
    merged, _, _ = load_checkpoint(folder, "merged")
    start, _, _ = load_checkpoint(folder, "adapter")  # the base it was trained on, + adapters
    base = start.get_base_model() if hasattr(start, "get_base_model") else start
    frozen = {n: t for n, t in base.state_dict().items() if "lora_" not in n and "proj" not in n}
    assert frozen, "layers LoRA does not touch"
    merged_state = merged.state_dict()
    for name, tensor in frozen.items():
        plain_name = name.replace("base_model.model.", "")
        assert torch.equal(merged_state[plain_name], tensor), name
    assert any(not torch.equal(t, t.bfloat16().float()) for t in frozen.values()), (
        "the frozen weights are not bfloat16 roundings"
    )


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_skips_an_update_whose_gradients_are_not_finite(stage, tmp_path):
    """What medrl's fault counting relies on (DeepSpeed 0.19.8, float32, one CPU process): an
    update whose gradient norm is not finite is not applied, and the engine reports that norm
    as inf (medrl.algorithms.numeric_faults.stepped_update_fault reads it)."""
    script = tmp_path / "nan_step.py"
    script.write_text(NAN_STEP)
    done = subprocess.run(
        [sys.executable, str(script), str(stage)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**__import__("os").environ, "MASTER_PORT": str(29650 + stage)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"applied": False, "changed": False, "norm": "inf"}


NAN_STEP = """
import json, os, sys
import torch
os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import deepspeed
from deepspeed.utils import safe_get_full_fp32_param

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
config = {
    "train_micro_batch_size_per_gpu": 1,
    "zero_optimization": {"stage": int(sys.argv[1])},
    "zero_allow_untested_optimizer": True,
    "gradient_clipping": 1.0,
}
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
x = torch.randn(4, 8)
engine.backward(engine(x).pow(2).mean())
engine.step()
weights = lambda: torch.cat([safe_get_full_fp32_param(p).flatten() for p in model.parameters()])
before = weights().clone()
engine.backward(engine(x).pow(2).mean() * float("nan"))
engine.step()
print(json.dumps({
    "applied": engine.was_step_applied(),
    "changed": not torch.equal(before, weights()),
    "norm": str(engine.get_global_grad_norm()),
}))
"""
