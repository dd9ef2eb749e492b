"""Stage checkpoints: one folder any later stage or evaluation loads with one config key.

Layout::

    <stage dir>/manifest.json   lineage (see manifest.py)
    <stage dir>/config.yaml     the run's resolved config
    <stage dir>/metrics.json    the stage's final metrics (reused when a killed run resumes)
    <stage dir>/merged/         full weights with adapters merged + tokenizer and chat template
    <stage dir>/adapter/        the peft adapter (LoRA / QLoRA stages only)
    <stage dir>/validation.jsonl  validations during training, one per line (when enabled)

The merged form needs no peft to run; the adapter form is loaded onto its parent, whose content
hash must equal the one the manifest recorded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrl.checkpoints.hashing import base_state_dict, ids_hash, weights_hash
from medrl.checkpoints.manifest import (
    LineageError,
    Manifest,
    ParentRef,
    check_matches_run,
    code_version,
    format_record,
    utc_now,
)
from medrl.data.records import QARecord
from medrl.utils.io import atomic_directory

MERGED_DIR = "merged"
ADAPTER_DIR = "adapter"
FORMS = ("merged", "adapter")


def save_stage_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    tokenizer: Any,
    stage: str,
    parent: ParentRef,
    adapter: Any,
    output_format: Any,
    chat_template_kwargs: Mapping[str, Any],
    pools: Mapping[str, Sequence[QARecord]],
    dataset: str,
    seed: int,
    root_model: str,
    resolved_config: str = "",
    metrics: Mapping[str, float] | None = None,
    selection: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, Path] | None = None,
) -> Manifest:
    """Write a complete stage checkpoint atomically (a crash leaves no half-written folder).

    selection: which training step the weights are and why (validation.select), recorded in
    the manifest. extra_files: name in the folder -> file copied there (the validation
    history)."""
    with atomic_directory(folder) as staging:
        merged = merged_model(model)
        merged.save_pretrained(staging / MERGED_DIR, safe_serialization=True)
        tokenizer.save_pretrained(staging / MERGED_DIR)
        forms = ["merged"]
        if _is_peft(model):
            model.save_pretrained(staging / ADAPTER_DIR)
            forms.append("adapter")
        (staging / "config.yaml").write_text(resolved_config)
        (staging / "metrics.json").write_text(json.dumps(dict(metrics or {}), indent=2))
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, staging / name)
        manifest = Manifest(
            stage=stage,
            weights_hash=weights_hash(merged),
            parent=parent,
            adapter={"kind": getattr(adapter, "kind", "full"), **asdict(adapter)},
            output_format=format_record(output_format),
            chat_template_kwargs=dict(chat_template_kwargs),
            data_pools={
                name: {"count": len(records), "ids_hash": ids_hash(r.id for r in records)}
                for name, records in pools.items()
            },
            dataset=dataset,
            seed=seed,
            root_model=root_model,
            forms=tuple(forms),
            code_version=code_version(),
            created=utc_now(),
            selection=dict(selection or {}),
        )
        manifest.write(staging)
    return manifest


def merged_model(model: nn.Module) -> nn.Module:
    """A plain transformers model computing what `model` computes, adapters merged in.

    The training model is left untouched: merged weights are W + delta (dequantized first for
    4-bit bases), and the plain model is built on the meta device and assigned those tensors,
    so no second full copy of the unchanged weights is allocated.
    """
    if not _is_peft(model):
        return model
    from transformers import AutoModelForCausalLM

    base = model.get_base_model()
    state = {n: t for n, t in base_state_dict(model).items() if not _is_quant_state(n)}
    state.update(_dequantized_4bit_weights(base))
    state.update(_merged_lora_weights(base))
    config = base.config.__class__.from_dict(base.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=_float_dtype(state))
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    _copy_meta_buffers(plain, base)
    _check_no_meta(plain)
    plain.generation_config = base.generation_config
    return plain


def load_checkpoint(
    folder: str | Path,
    form: str = "merged",
    *,
    output_format: Any | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, Any, Manifest]:
    """Load a stage checkpoint as (model, tokenizer, manifest), verifying its lineage.

    merged:  the merged weights; their hash must equal manifest.weights_hash.
    adapter: the parent (a model spec or the parent checkpoint's merged weights) with the
             adapter applied; the parent's hash must equal manifest.parent.weights_hash.
    When `output_format` / `chat_template_kwargs` are given they must equal the manifest's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if form not in FORMS:
        raise ValueError(f"checkpoint form {form!r} is not valid; choose one of {list(FORMS)}")
    manifest = Manifest.read(folder)
    check_matches_run(manifest, folder, output_format, chat_template_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder / MERGED_DIR)
    if form == "merged":
        model = AutoModelForCausalLM.from_pretrained(folder / MERGED_DIR, dtype=dtype)
        _require_hash(model, manifest.weights_hash, f"{folder}/{MERGED_DIR}", "its manifest")
        return model, tokenizer, manifest
    if "adapter" not in manifest.forms:
        raise LineageError(
            f"checkpoint {folder} has no adapter form (stage trained with adapter "
            f"{manifest.adapter['kind']!r}); load form='merged'"
        )
    return _load_adapter_form(folder, manifest, dtype), tokenizer, manifest


def _load_adapter_form(folder: Path, manifest: Manifest, dtype: torch.dtype) -> nn.Module:
    from peft import PeftModel

    parent = _load_parent(manifest, dtype)
    _require_hash(
        parent,
        manifest.parent.weights_hash,
        manifest.parent.location,
        f"the parent recorded in {folder}/manifest.json",
    )
    return PeftModel.from_pretrained(parent, folder / ADAPTER_DIR)


def _load_parent(manifest: Manifest, dtype: torch.dtype) -> nn.Module:
    if manifest.parent.kind == "checkpoint":
        model, _, _ = load_checkpoint(manifest.parent.location, "merged", dtype=dtype)
        return model
    from medrl.models.loading import load_policy
    from medrl.models.spec import FullFinetune, ModelSpec, QLoraAdapter

    spec = ModelSpec(**manifest.parent.model_spec)
    if manifest.adapter["kind"] == "qlora":
        fields = {k: v for k, v in manifest.adapter.items() if k != "kind"}
        return load_policy(spec, QLoraAdapter(**fields)).model.get_base_model()
    return load_policy(spec, FullFinetune()).model


def _require_hash(model: nn.Module, expected: str, where: str, recorded_by: str) -> None:
    actual = weights_hash(model)
    if actual != expected:
        raise LineageError(
            f"the weights at {where} (hash {actual[:12]}) are not the ones {recorded_by} "
            f"names (hash {expected[:12]}): the checkpoint does not descend from this parent. "
            "Load the checkpoint it was trained from, or retrain the stage."
        )


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _merged_lora_weights(base: nn.Module) -> dict[str, torch.Tensor]:
    """W + delta for every LoRA-wrapped layer, under the plain layer's weight name."""
    from peft.tuners.lora import LoraLayer

    merged = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = _float_weight(module.base_layer.weight)
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            merged[f"{name}.weight"] = (weight + delta.to(weight.dtype)).detach()
    return merged


def _dequantized_4bit_weights(base: nn.Module) -> dict[str, torch.Tensor]:
    """Floating-point copies of every bitsandbytes 4-bit weight (QLoRA bases)."""
    weights = {}
    for name, module in base.named_modules():
        weight = getattr(module, "weight", None)
        if getattr(weight, "quant_state", None) is not None:
            plain_name = name.replace(".base_layer", "")
            weights[f"{plain_name}.weight"] = _float_weight(weight)
    return weights


def _float_weight(weight: torch.Tensor) -> torch.Tensor:
    """A weight in floating point: bitsandbytes 4-bit weights are dequantized."""
    if getattr(weight, "quant_state", None) is None:
        return weight
    import bitsandbytes.functional as bnbf

    if getattr(weight.quant_state, "packing_format_for_cpu", False):
        # On CPUs with avx512_bf16, bitsandbytes repacks 4-bit weights for fast inference at the
        # first eval-mode forward; undo that as its own state_dict() does before reading them.
        weight.data, weight.quant_state = bnbf._convert_weight_packed_for_cpu_inverse(
            weight.data, weight.quant_state
        )
    return bnbf.dequantize_4bit(weight.data, weight.quant_state).to(weight.quant_state.dtype)


def _is_quant_state(name: str) -> bool:
    # bitsandbytes keeps its quantization statistics as extra state-dict entries.
    return any(part in name for part in (".absmax", ".quant_map", ".nested_", ".quant_state"))


def _float_dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    return next(t.dtype for t in state.values() if t.is_floating_point())


def _copy_meta_buffers(plain: nn.Module, base: nn.Module) -> None:
    """Non-persistent buffers (e.g. rotary inv_freq) are not in state dicts: share the base's."""
    base_buffers = {n.replace(".base_layer", ""): b for n, b in base.named_buffers()}
    for name, buffer in list(plain.named_buffers()):
        if buffer.is_meta:
            module_name, _, buffer_name = name.rpartition(".")
            plain.get_submodule(module_name).register_buffer(
                buffer_name, base_buffers[name], persistent=False
            )


def _check_no_meta(model: nn.Module) -> None:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    missing = [name for name, tensor in tensors if tensor.is_meta]
    if missing:
        raise LineageError(f"merging left parameters without weights: {missing[:5]}")
