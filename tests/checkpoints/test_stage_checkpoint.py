"""Stage checkpoints reload to the same model, and lineage mismatches are refused."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from medrl.checkpoints import (
    LineageError,
    ParentRef,
    load_checkpoint,
    save_stage_checkpoint,
    weights_hash,
)
from medrl.data.records import QARecord
from medrl.models import FullFinetune, LoraAdapter, QLoraAdapter, load_policy
from medrl.prompts import JsonFormat, XmlFormat

RECORD = QARecord(id="q1", question="Q?", options={"A": "x", "B": "y"}, answer="A")
PROMPT = "Which vitamin is found only in animal products?"


def trained_policy(spec, adapter):
    """A policy whose trainable weights moved away from their initial values (as after SFT)."""
    policy = load_policy(spec, adapter)
    parent_hash = weights_hash(policy.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in policy.model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    parent = ParentRef("model", spec.name, policy.weights_source, parent_hash, asdict(spec))
    return policy, parent


def save(folder, policy, parent, adapter, output_format=None):
    return save_stage_checkpoint(
        folder,
        model=policy.model,
        tokenizer=policy.tokenizer,
        stage="sft",
        parent=parent,
        adapter=adapter,
        output_format=output_format or XmlFormat(),
        chat_template_kwargs=policy.chat_template_kwargs,
        pools={"sft_train": [RECORD]},
        dataset="medmcqa",
        seed=42,
        root_model="tiny-qwen3",
        resolved_config="seed: 42\n",
    )


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.mark.parametrize("form", ["merged", "adapter"])
def test_a_lora_checkpoint_reloads_to_the_in_memory_model(tiny_spec, tmp_path, form):
    adapter = LoraAdapter(r=4, alpha=8, dropout=0.0)
    policy, parent = trained_policy(tiny_spec, adapter)
    save(tmp_path / "sft", policy, parent, adapter)
    model, tokenizer, manifest = load_checkpoint(tmp_path / "sft", form)
    expected = logits(policy.model, policy.tokenizer)
    torch.testing.assert_close(logits(model, tokenizer), expected, rtol=1e-5, atol=1e-5)
    assert manifest.parent.weights_hash == parent.weights_hash
    assert not hasattr(model, "peft_config") if form == "merged" else hasattr(model, "peft_config")


def test_a_full_finetuning_checkpoint_reloads_and_has_no_adapter_form(tiny_spec, tmp_path):
    policy, parent = trained_policy(tiny_spec, FullFinetune())
    manifest = save(tmp_path / "sft", policy, parent, FullFinetune())
    model, tokenizer, _ = load_checkpoint(tmp_path / "sft", "merged")
    assert torch.equal(logits(model, tokenizer), logits(policy.model, policy.tokenizer))
    assert manifest.forms == ("merged",)
    with pytest.raises(LineageError, match="has no adapter form"):
        load_checkpoint(tmp_path / "sft", "adapter")


def test_a_qlora_checkpoint_merges_into_plain_floating_point_weights(tiny_spec, tmp_path):
    adapter = QLoraAdapter(r=4, alpha=8, dropout=0.0, compute_dtype="float32")
    policy, parent = trained_policy(tiny_spec, adapter)
    expected = logits(policy.model, policy.tokenizer)  # eval mode: may repack the 4-bit weights
    save(tmp_path / "sft", policy, parent, adapter)
    model, tokenizer, _ = load_checkpoint(tmp_path / "sft", "merged")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # bitsandbytes' CPU inference path computes 4-bit layers in bf16, hence the 1e-2 tolerance;
    # a wrong merge (missing adapter delta or misread 4-bit weights) is off by far more.
    torch.testing.assert_close(logits(model, tokenizer), expected, rtol=1e-2, atol=1e-2)
    plain_base = load_policy(tiny_spec, FullFinetune()).model
    assert (logits(model, tokenizer) - logits(plain_base, tokenizer)).abs().max() > 0.05


def test_the_manifest_records_the_lineage(tiny_spec, tmp_path):
    adapter = LoraAdapter(r=4, alpha=8)
    policy, parent = trained_policy(tiny_spec, adapter)
    save(tmp_path / "sft", policy, parent, adapter)
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert manifest["stage"] == "sft"
    assert manifest["parent"]["kind"] == "model"
    assert manifest["parent"]["weights_hash"] == weights_hash(load_policy(tiny_spec, adapter).model)
    assert manifest["output_format"]["name"] == "xml"
    assert manifest["chat_template_kwargs"] == {"enable_thinking": False}
    assert manifest["data_pools"]["sft_train"]["count"] == 1
    assert manifest["adapter"]["kind"] == "lora" and manifest["adapter"]["r"] == 4
    assert manifest["seed"] == 42 and manifest["code_version"]["medrl"]
    assert (tmp_path / "sft" / "merged" / "tokenizer_config.json").is_file()
    assert (tmp_path / "sft" / "config.yaml").read_text() == "seed: 42\n"


def test_an_adapter_whose_manifest_names_another_parent_is_refused(tiny_spec, tmp_path):
    adapter = LoraAdapter(r=4, alpha=8)
    policy, parent = trained_policy(tiny_spec, adapter)
    wrong_parent = ParentRef(parent.kind, parent.name, parent.location, "0" * 64, parent.model_spec)
    save(tmp_path / "sft", policy, wrong_parent, adapter)
    with pytest.raises(LineageError, match="does not descend from this parent"):
        load_checkpoint(tmp_path / "sft", "adapter")


def test_merged_weights_changed_after_saving_are_refused(tiny_spec, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = LoraAdapter(r=4, alpha=8)
    policy, parent = trained_policy(tiny_spec, adapter)
    save(tmp_path / "sft", policy, parent, adapter)
    weights_file = tmp_path / "sft" / "merged" / "model.safetensors"
    tensors = load_file(weights_file)
    name = next(k for k in tensors if k.endswith("q_proj.weight"))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights_file, metadata={"format": "pt"})
    with pytest.raises(LineageError, match="not the ones its manifest names"):
        load_checkpoint(tmp_path / "sft", "merged")


def test_a_checkpoint_trained_for_another_output_format_is_refused(tiny_spec, tmp_path):
    adapter = LoraAdapter(r=4, alpha=8)
    policy, parent = trained_policy(tiny_spec, adapter)
    save(tmp_path / "sft", policy, parent, adapter, output_format=XmlFormat())
    with pytest.raises(LineageError, match="set format="):
        load_checkpoint(tmp_path / "sft", "merged", output_format=JsonFormat())
    with pytest.raises(LineageError, match="chat_template_kwargs"):
        load_checkpoint(tmp_path / "sft", "merged", chat_template_kwargs={"enable_thinking": True})


def test_a_folder_without_a_manifest_is_not_a_checkpoint(tmp_path):
    with pytest.raises(LineageError, match="manifest.json is missing"):
        load_checkpoint(tmp_path, "merged")
