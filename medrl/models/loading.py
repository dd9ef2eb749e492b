"""Load a policy (model + tokenizer) from a ModelSpec and wrap it in the chosen adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrl.models.materialize import ModelLoadError, materialize
from medrl.models.spec import AdapterSpec, FullFinetune, LoraAdapter, ModelSpec, QLoraAdapter


@dataclass
class Policy:
    """A loaded policy: the (possibly adapter-wrapped) model, its tokenizer, and where it came from.

    weights_source is the hub id or local folder the weights were read from, recorded so later
    stages can state and verify their parent.
    """

    model: nn.Module
    tokenizer: Any
    spec: ModelSpec
    adapter: AdapterSpec
    weights_source: str

    @property
    def chat_template_kwargs(self) -> dict[str, Any]:
        return dict(self.spec.chat_template_kwargs)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.model.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return trainable, sum(p.numel() for p in params)


def resolve_dtype(name: str) -> torch.dtype:
    """Map a config dtype name to torch; `auto` picks bfloat16 only where CUDA supports it."""
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(spec: ModelSpec, source: str | None = None) -> Any:
    """Load the tokenizer; guarantees a pad token (the eos token when the model defines none)."""
    from transformers import AutoTokenizer

    where = spec.tokenizer_path or source or materialize(spec)
    key = "model.tokenizer_path" if spec.tokenizer_path else _source_key(spec)
    tokenizer = _from_pretrained(
        AutoTokenizer, where, key, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(spec: ModelSpec, adapter: AdapterSpec) -> Policy:
    """Load weights and tokenizer for `spec` and apply `adapter` (full, LoRA or QLoRA)."""
    source = materialize(spec)
    tokenizer = load_tokenizer(spec, source)
    model = _load_model(spec, adapter, source)
    if spec.gradient_checkpointing:
        _enable_activation_checkpointing(model)
    model = apply_adapter(model, adapter, gradient_checkpointing=spec.gradient_checkpointing)
    return Policy(
        model=model, tokenizer=tokenizer, spec=spec, adapter=adapter, weights_source=source
    )


def apply_adapter(model: nn.Module, adapter: AdapterSpec, gradient_checkpointing: bool = False):
    """Make the right parameters trainable: all of them, or LoRA adapters on a frozen base."""
    if isinstance(adapter, FullFinetune):
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if isinstance(adapter, QLoraAdapter):
        # Casts norms to fp32 and freezes the 4-bit base, as the QLoRA recipe prescribes.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    config = LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=adapter.target_modules,
        bias=adapter.bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _enable_activation_checkpointing(model: nn.Module) -> None:
    # Non-reentrant checkpointing also works when only adapter weights require grad.
    # transformers 5 renamed gradient_checkpointing_enable; older releases only have the old name.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _load_model(spec: ModelSpec, adapter: AdapterSpec, source: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(spec.dtype),
        "revision": spec.revision,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if isinstance(adapter, QLoraAdapter):
        kwargs["quantization_config"] = _bnb_config(adapter)
    model = _from_pretrained(AutoModelForCausalLM, source, _source_key(spec), **kwargs)
    if isinstance(adapter, LoraAdapter) and not isinstance(adapter, QLoraAdapter):
        model.requires_grad_(False)
    if isinstance(adapter, QLoraAdapter):
        _keep_4bit_training_kernels(model)
    return model


def _keep_4bit_training_kernels(model: nn.Module) -> None:
    """Stop bitsandbytes from switching 4-bit layers to its CPU inference kernel.

    bitsandbytes >= 0.49, on a CPU with AVX-512 bf16, repacks a Linear4bit's weight for a
    faster kernel on its first forward in eval mode without grad (a rollout, an evaluation) and
    uses that kernel from then on, in training too; the kernel has no backward, so every later
    update silently loses the gradient through the frozen base (or raises where the layer has a
    bias, as in Qwen2). Clearing the layer's capability flag keeps the differentiable path.
    Pinned by tests/models/test_loading.py (gradients equal before and after a no-grad forward).
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _bnb_config(adapter: QLoraAdapter):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=adapter.quant_type,
        bnb_4bit_use_double_quant=adapter.double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(adapter.compute_dtype),
    )


def _source_key(spec: ModelSpec) -> str:
    """The config key that decides where `spec`'s weights are read: model.path for pretrained
    and checkpoint sources, model.cache_dir for the folders medrl builds (gguf, tiny_random)."""
    return "model.path" if spec.source in ("pretrained", "checkpoint") else "model.cache_dir"


def _looks_local(where: str) -> bool:
    """True when `where` can only be a filesystem path: a Hub id is ``name`` or
    ``namespace/name``, never absolute, never starting with ``.`` or ``~``, never two slashes."""
    return Path(where).is_absolute() or where.startswith((".", "~")) or where.count("/") > 1


def _from_pretrained(loader: Any, where: str, key: str, **kwargs: Any) -> Any:
    """from_pretrained with an error that names the config `key` and says how to load without
    the hub."""
    if _looks_local(where) and not Path(where).exists():
        # transformers would try `where` as a hub id and blame the network.
        tilde = "; ~ is not expanded, write the full path" if where.startswith("~") else ""
        raise ModelLoadError(
            f"{key}: the local folder {where!r} does not exist; point {key} at an existing "
            f"folder (a Hugging Face Hub id looks like namespace/name{tilde})"
        )
    try:
        return loader.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as error:
        if Path(where).exists():
            # ValueError too: transformers raises it for a folder without tokenizer files.
            raise ModelLoadError(
                f"{key}: could not load the model folder {where!r}: {error}"
            ) from error
        if not isinstance(error, OSError):
            raise  # a bad argument, not a hub problem
        raise ModelLoadError(
            f"{key}: could not load {where!r} from the Hugging Face Hub "
            f"({error.__class__.__name__}). Without network access, copy the model to a local "
            f"folder and set {key}=/that/folder (or model=smollm2_135m / tiny_qwen3, which "
            "need no hub)."
        ) from error
