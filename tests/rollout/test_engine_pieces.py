"""The engine picks its pieces by device: the CPU pieces on a CPU only, transformers' own path
plus the device-independent pieces elsewhere; nothing is set up by importing medrl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medrl.rollout import (
    STRAIGHTFORWARD,
    EngineSettings,
    RolloutEngine,
    decode_attention,
    engine_pieces,
)
from medrl.rollout import onednn_linear as onednn_module
from medrl.rollout.decode_attention import NAME as DECODE_ATTENTION
from medrl.rollout.lean_passes import GQA_ATTENTION

CPU_PIECES = (
    "decode_attention",
    "lean_activations",
    "release_heap",
    "prepack_sampling_weights",
    "keep_cast_weights",
    "release_cast_sources",
)
# Everything on, release_heap and prepacking included, so "off" can only come from the device.
EVERYTHING = EngineSettings(release_heap=True, prepack_sampling_weights=True)


def test_a_cpu_engine_runs_every_piece_it_is_given():
    pieces = engine_pieces(EVERYTHING, "cpu")
    assert pieces.device_type == "cpu"
    assert all(getattr(pieces, name) for name in CPU_PIECES)
    assert pieces.cpu_linear == "auto"  # timed per phase (medrl.rollout.kernel_choice)
    assert pieces.kernel_cache_capacity == 64
    assert pieces.sampler == "medrl"
    assert pieces.merge_adapter and pieces.shared_prompt_logprobs
    assert pieces.pack_completions and pieces.fused_head and pieces.autocast_weights


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_a_cuda_engine_drops_the_cpu_pieces_and_keeps_the_device_independent_ones(device):
    pieces = engine_pieces(EVERYTHING, device)
    assert pieces.device_type == "cuda"
    assert not any(getattr(pieces, name) for name in CPU_PIECES)
    assert pieces.cpu_linear == "torch" and pieces.kernel_cache_capacity is None
    # shared prefill + finished rows leaving (medrl's sampler), merged adapters, packing and
    # chunked log-probs stay: each checks on its own where it is exact.
    assert pieces.sampler == "medrl"
    assert pieces.merge_adapter and pieces.shared_prompt_logprobs
    assert pieces.pack_completions and pieces.fused_head and pieces.autocast_weights


def test_released_cast_sources_need_kept_copies():
    """Without kept copies every phase would cast again, reading the released pages back."""
    pieces = engine_pieces(replace(EVERYTHING, keep_cast_weights=False), "cpu")
    assert not pieces.keep_cast_weights and not pieces.release_cast_sources


def test_settings_turned_off_stay_off_and_packing_needs_shared_prompts():
    pieces = engine_pieces(
        replace(EVERYTHING, cpu_linear="torch", shared_prompt_logprobs=False), "cpu"
    )
    assert pieces.cpu_linear == "torch"
    assert not pieces.shared_prompt_logprobs
    assert not pieces.pack_completions and not pieces.fused_head  # both build on shared prompts


def test_the_straightforward_preset_in_config_is_the_one_in_code(compose):
    from hydra.utils import instantiate

    cfg = compose("train", ["engine=straightforward"])
    assert instantiate(cfg.engine) == STRAIGHTFORWARD
    assert instantiate(cfg.grpo.module.engine) == STRAIGHTFORWARD  # grpo reads the same group
    assert instantiate(cfg.sft.module.engine) == STRAIGHTFORWARD  # and so does sft
    pieces = engine_pieces(STRAIGHTFORWARD, "cpu")
    assert pieces.sampler == "hf" and pieces.cpu_linear == "torch"
    assert not any(getattr(pieces, name) for name in CPU_PIECES)
    assert not (pieces.merge_adapter or pieces.shared_prompt_logprobs or pieces.pack_completions)


def test_the_default_engine_group_is_the_dataclass_default(compose):
    from hydra.utils import instantiate

    assert instantiate(compose("train").engine) == EngineSettings()


def _linear_routed(model: nn.Module) -> bool:
    return any("forward" in vars(m) for m in model.modules() if type(m) is nn.Linear)


def _attention(model: nn.Module) -> str:
    return model.config._attn_implementation


def test_the_sampling_context_of_a_cpu_engine_switches_attention_and_linears(tiny_policy):
    model = tiny_policy.model
    settings = EngineSettings(cpu_linear="onednn", decode_attention=True)
    with RolloutEngine(settings, "cpu").sampling(model):
        assert _attention(model) == DECODE_ATTENTION
        assert _linear_routed(model)
    assert _attention(model) == "sdpa" and not _linear_routed(model)


@pytest.fixture
def attention_timings(monkeypatch):
    """decode_attention=auto with a fresh chooser whose timing is faked: the (sdpa, medrl)
    seconds it returns are set by the test; every timed shape is recorded."""
    timed = []
    outcome = {"seconds": (1.0, 2.0)}

    def fake(rows, heads, kv_heads, head_dim, dtype):
        timed.append((rows, heads, kv_heads, head_dim, dtype))
        return decode_attention.DecodeAttentionTiming(
            rows, heads, kv_heads, head_dim, str(dtype), *outcome["seconds"]
        )

    monkeypatch.setattr(decode_attention, "CHOOSER", decode_attention.DecodeAttentionChooser())
    monkeypatch.setattr(decode_attention, "time_decode_attention", fake)
    return SimpleNamespace(timed=timed, outcome=outcome)


def test_auto_decode_attention_never_times_or_switches_float32_sampling(
    tiny_policy, attention_timings
):
    model = tiny_policy.model
    with RolloutEngine(EngineSettings(), "cpu").sampling(model, rows=16):
        assert _attention(model) == "sdpa"
    assert attention_timings.timed == []


@pytest.mark.parametrize("medrl_faster", [True, False])
def test_auto_decode_attention_switches_half_precision_sampling_only_where_it_was_faster(
    tiny_policy, attention_timings, medrl_faster
):
    model = tiny_policy.model
    attention_timings.outcome["seconds"] = (2.0, 1.0) if medrl_faster else (1.0, 2.0)
    engine = RolloutEngine(EngineSettings(), "cpu")
    expected = DECODE_ATTENTION if medrl_faster else "sdpa"
    for _ in range(2):  # timed once per process and shape
        with torch.autocast("cpu", dtype=torch.bfloat16), engine.sampling(model, rows=16):
            assert _attention(model) == expected
    config = model.config
    shape = (config.num_attention_heads, config.num_key_value_heads, config.head_dim)
    assert attention_timings.timed == [(16, *shape, torch.bfloat16)]
    winner = "medrl" if medrl_faster else "sdpa"
    assert any(
        "decode_attention=auto, " in line and f": {winner} (" in line for line in engine.decisions()
    )


def test_decode_attention_timing_runs_both_attentions():
    timing = decode_attention.time_decode_attention(4, 4, 2, 8, torch.bfloat16)
    assert 0 < timing.sdpa_seconds < 1 and 0 < timing.medrl_seconds < 1
    assert timing.describe().startswith("decode_attention=auto, bfloat16 (4 rows, 4 heads / 2")


def test_the_contexts_of_a_cuda_engine_leave_transformers_path_alone(tiny_policy):
    """A CUDA engine's contexts, applied to the tiny model's modules (the contexts read the
    engine's device, not the tensors'): the model's own attention and Linears throughout."""
    model = tiny_policy.model
    engine = RolloutEngine(EVERYTHING, "cuda")
    with engine.sampling(model):
        assert _attention(model) == "sdpa" and not _linear_routed(model)
    with engine.passes(model, None):
        assert _attention(model) == "sdpa" and not _linear_routed(model)
    with engine.linears(model) as routed:
        assert routed == 0 and not _linear_routed(model)


def test_the_pass_context_of_a_cpu_engine_routes_linears_and_lean_attention(tiny_policy):
    model = tiny_policy.model
    with RolloutEngine(EngineSettings(cpu_linear="onednn"), "cpu").passes(model, None):
        assert _attention(model) == GQA_ATTENTION
        assert _linear_routed(model)
    assert _attention(model) == "sdpa" and not _linear_routed(model)


def test_sft_uses_the_engine_linears_on_a_cpu(tiny_policy, monkeypatch):
    from medrl.algorithms.sft import SFTModule

    if not onednn_module.onednn_linear_supported():
        pytest.skip("this torch build has no oneDNN linear")
    calls = []
    original = onednn_module._matmul
    monkeypatch.setattr(
        onednn_module, "_matmul", lambda x, w, b: calls.append(1) or original(x, w, b)
    )
    ids = tiny_policy.tokenizer("Which vitamin?", return_tensors="pt").input_ids
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "loss_mask": torch.ones_like(ids),
    }
    routed = SFTModule(tiny_policy.model, engine=EngineSettings(cpu_linear="onednn"))
    plain = SFTModule(tiny_policy.model, engine=EngineSettings(cpu_linear="torch"))
    with torch.no_grad():
        loss_routed, _ = routed(batch)
        assert calls
        calls.clear()
        loss_plain, _ = plain(batch)
    assert not calls
    torch.testing.assert_close(loss_routed, loss_plain, rtol=1e-5, atol=1e-6)
    tiny_policy.model.eval()  # SFTModule put the shared model in train mode


# The third-party libraries medrl imports come first: what they set on import is theirs (nltk,
# through rouge_score, imports scikit-learn when installed, which sets KMP_* variables), and the
# probe is about what medrl itself sets.
PROBE = """
import json, os, sys
import torch, transformers, lightning, rouge_score.rouge_scorer
before = dict(os.environ)
from transformers import AttentionInterface
names_before = set(AttentionInterface._global_mapping)
import medrl.train, medrl.eval, medrl.algorithms.grpo, medrl.algorithms.sft, medrl.rollout
from medrl.rollout import EngineSettings, RolloutEngine
imported = {k: v for k, v in os.environ.items() if before.get(k) != v}
registered = sorted(set(AttentionInterface._global_mapping) - names_before)
RolloutEngine(EngineSettings(), sys.argv[1])
built = {k: v for k, v in os.environ.items() if before.get(k) != v}
print(json.dumps({"imported": imported, "registered": registered, "built": built,
                  "after_build": sorted(set(AttentionInterface._global_mapping) - names_before)}))
"""


def _probe(device: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in onednn_module.KERNEL_CACHE_VARIABLES}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, device], env={**base, **env}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_importing_medrl_sets_nothing_and_a_cpu_engine_sets_its_caps_when_built():
    cpu = _probe("cpu")
    assert cpu["imported"] == {} and cpu["registered"] == []
    assert cpu["built"] == {name: "64" for name in onednn_module.KERNEL_CACHE_VARIABLES}
    assert set(cpu["after_build"]) == {DECODE_ATTENTION, GQA_ATTENTION}
    kept = _probe("cpu", LRU_CACHE_CAPACITY="7")  # a value the user set is kept
    assert kept["built"] == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}


def test_building_a_cuda_engine_sets_nothing():
    cuda = _probe("cuda")
    assert cuda["imported"] == {} and cuda["built"] == {} and cuda["after_build"] == []


def test_the_engine_calls_no_transformers_api_marked_for_removal(tiny_policy):
    """transformers marks APIs it will remove with a FutureWarning ("... will be removed in
    version 5.40.0"): medrl's sampler and log-prob passes (which hand the model a KV cache)
    must not trigger one, or a fresh install after that release breaks."""
    import warnings

    from medrl.rollout import SamplingSettings

    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = RolloutEngine(EngineSettings(), "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rollout = engine.generate(
            model, tok, ["Which vitamin?", "A"], SamplingSettings(max_new_tokens=4), 2,
            prompt_seeds=[1, 2],
        )  # fmt: skip
        with torch.no_grad(), engine.passes(model):
            engine.logprobs(model, rollout, slice(None), 1.0)  # shared prompt: a KV cache
            plain = RolloutEngine(replace(EngineSettings(), pack_completions=False), "cpu")
            plain.logprobs(model, rollout, slice(None), 1.0)
    removals = [str(w.message) for w in caught if "will be removed" in str(w.message)]
    assert not removals, removals


def test_a_decode_attention_decision_is_stored_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path))
    timed = []

    def fake(rows, heads, kv_heads, head_dim, dtype):
        timed.append(rows)
        return decode_attention.DecodeAttentionTiming(
            rows, heads, kv_heads, head_dim, "bfloat16", 2.0, 1.0
        )

    monkeypatch.setattr(decode_attention, "time_decode_attention", fake)
    model = nn.Module()
    model.config = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    first = decode_attention.DecodeAttentionChooser(persist=True)
    assert first.medrl_wins(model, 16, torch.bfloat16) and timed == [16]
    later = decode_attention.DecodeAttentionChooser(persist=True)  # as in another process
    assert later.medrl_wins(model, 16, torch.bfloat16) and timed == [16]
    (decision,) = later.decisions.values()
    assert decision.stored and decision.medrl_seconds == 1.0
