"""The pieces of trainer=fsdp (medrl.sharding), each compared with the unsharded model: a
tiny LoRA Qwen3 sharded over 2 CPU processes (gloo) by tests/distributed/fsdp_worker.py, and
the parts that need no process group.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from medrl import sharding
from medrl.utils.config import PROJECT_ROOT

WORKER = Path(__file__).with_name("fsdp_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Each of the 2 workers' report (see fsdp_worker.main)."""
    out = tmp_path_factory.mktemp("fsdp_worker")
    port = str(free_port())
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), port, str(out)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    logs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-4000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_the_units_are_the_decoder_layers_found_on_the_model(ranks):
    assert ranks[0]["units"] == ["Qwen3DecoderLayer", "Qwen3DecoderLayer"]


def test_a_sharded_model_never_samples_through_swapped_merged_weights(ranks):
    assert ranks[0]["plain_can_merge"], "the same model unsharded merges"
    assert ranks[0]["fsdp_managed"]
    assert not ranks[0]["fsdp_can_merge"]


def test_lockstep_sampling_equals_the_unsharded_model_when_a_rank_ends_first(ranks):
    """Rank 0's row hits the eos early; it keeps running filler forwards until rank 1's row
    ends, so both run as many forwards (each gathers every layer from both), and each rank's
    tokens are the unsharded model's."""
    short, long = (r["expected"].shape[1] for r in ranks)
    assert short <= 2 < long, "the eos must end rank 0's row before rank 1's"
    for report in ranks:
        assert torch.equal(report["sharded"], report["expected"])
    assert ranks[0]["forwards"] == ranks[1]["forwards"] == long


def test_gradient_norm_is_over_every_shard_and_clipping_reaches_the_bound(ranks):
    for report in ranks:
        assert report["grad_norm"] == pytest.approx(report["plain_grad_norm"], rel=1e-5)
        assert report["clipped_norm"] == pytest.approx(0.5 * report["grad_norm"], rel=1e-4)
    # A process's own gradients are its shard: the model's squared norm is their sum.
    local = [report["local_grad_norm"] for report in ranks]
    assert min(local) < 0.99 * ranks[0]["grad_norm"]
    assert local[0] ** 2 + local[1] ** 2 == pytest.approx(ranks[0]["grad_norm"] ** 2, rel=1e-4)


def test_the_full_state_dict_is_gathered_on_rank_zero_under_the_plain_names(ranks):
    gathered, plain = ranks[0]["full_state"], ranks[0]["plain_state"]
    assert gathered.keys() == plain.keys()
    assert any("lora_A" in name for name in gathered)
    for name, tensor in plain.items():
        assert torch.equal(gathered[name], tensor), name
    assert ranks[1]["full_state"] == {}


def test_weight_decay_groups_come_from_the_shapes_before_sharding(ranks):
    report = ranks[0]
    assert report["shard_ndims"] == [1], "FSDP flattens every parameter"
    assert report["decayed_without_matrices"] == 0
    assert report["decayed_with_matrices"] == report["trainable_matrices"] == 16


# --- no process group --------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)


class Stack(nn.Module):
    _no_split_modules = ["Block"]

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(2, 2)


class Wrapper(nn.Module):  # as a peft model wraps the transformers model
    def __init__(self) -> None:
        super().__init__()
        self.base = Stack()


def test_wrap_layers_default_to_the_models_no_split_modules():
    assert sharding.layer_classes(Wrapper()) == {Block}
    assert sharding.layer_classes(Wrapper(), ["Linear"]) == {nn.Linear}


def test_wrap_layers_that_name_no_module_fail_naming_the_setting():
    with pytest.raises(ValueError, match=r"trainer.strategy.wrap_layers: \['Qwen3DecoderLayer'\]"):
        sharding.layer_classes(Wrapper(), ["Qwen3DecoderLayer"])
    with pytest.raises(ValueError, match="name the layer classes to shard in trainer.strategy"):
        sharding.layer_classes(nn.Sequential(nn.Linear(2, 2)))


def test_plain_models_are_not_fsdp_managed_and_keep_their_gradient_norm():
    model = nn.Linear(3, 1)
    model(torch.ones(1, 3)).sum().backward()
    assert not sharding.is_fsdp_managed(model)
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert sharding.gradient_norm(model) == pytest.approx(expected.item())
    with pytest.raises(TypeError, match="root FSDP module"):
        sharding.clip_gradients(model, 1.0)


def test_fsdp_wrapper_segments_are_removed_from_names():
    name = "model._fsdp_wrapped_module.base.layers.0._fsdp_wrapped_module.q.lora_A.weight"
    assert sharding.clean_name(name) == "model.base.layers.0.q.lora_A.weight"


def test_zero3_partitioned_weights_count_as_sharded_and_are_never_read_directly():
    """DeepSpeed ZeRO-3 marks each parameter it partitions with a ds_id (an empty placeholder
    between forwards): the pieces that read or swap weights stand aside, as under FSDP."""
    from medrl.rollout.fused_head import fused_head_supported
    from medrl.rollout.onednn_linear import onednn_linear_supported, onednn_linears

    head = nn.Linear(4, 10, bias=False)
    model = nn.Sequential(nn.Linear(4, 4), head)
    model.config = type("Config", (), {"model_type": "llama"})()
    model.get_output_embeddings = lambda: head
    assert not sharding.weights_sharded(model) and fused_head_supported(model)
    with onednn_linears(model) as routed:
        assert routed == (2 if onednn_linear_supported() else 0)
    head.weight.ds_id = 0
    assert sharding.is_zero3_partitioned(model) and sharding.weights_sharded(model)
    assert not sharding.is_fsdp_managed(model)
    assert not fused_head_supported(model)
    with onednn_linears(model) as routed:
        assert routed == 0
