"""Content hashes that identify model weights and data pools in lineage manifests.

A hash covers what the weights compute with, not how they are stored: tensor names (with peft's
wrapper prefixes removed), dtypes, shapes and bytes, in sorted order. LoRA adapter tensors are
left out, so a LoRA-wrapped model hashes to its frozen base: the parent a stage trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn

_PEFT_PREFIX = "base_model.model."


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own weights under plain transformers names, without LoRA adapter tensors."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        name = name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")
        state[name] = tensor
    return state


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's base weights (see module docstring); 64 hex characters."""
    sha = hashlib.sha256()
    for name, tensor in sorted(base_state_dict(model).items()):
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        sha.update(_tensor_bytes(tensor))
    return sha.hexdigest()


def ids_hash(ids: Iterable[str]) -> str:
    """sha256 of an ordered list of record ids: two pools hash equal iff they hold the same ids."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    # numpy has no bfloat16: hash the raw 16-bit patterns instead.
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return flat.numpy().tobytes()
