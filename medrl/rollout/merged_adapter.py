"""Sample through LoRA weights merged into the base, and put the exact originals back after.

peft's unmerged LoRA forward costs three matmuls and a handful of small ops per adapted layer;
during decoding (one token per row) those small ops dominate. peft's own merge_adapter /
unmerge_adapter adds and later subtracts B@A in place, which leaves rounding error in the base
weights after every step: over a run the reference policy (the base with adapters disabled)
would drift. Here each adapted Linear's weight Parameter is swapped for a new merged tensor and
the original Parameter object (untouched, still the one the optimizer and the reference use) is
swapped back afterwards.

Under autocast (Lightning's bf16-mixed), every matmul casts its float32 weight to bfloat16 on
each call; with frozen weights autocast keeps no cache, so a decode step would re-cast the whole
model once per token. autocast_weights casts every frozen Linear weight once for the rollout
instead: the same bfloat16 numbers autocast would use. A merged weight is then rounded to
bfloat16 as a whole, so under autocast merged sampling matches peft's unmerged forward to
bfloat16 rounding (to float32 rounding without autocast).

Two CPU memory measures for autocast (engine settings keep_cast_weights and
release_cast_sources): `CastCopies` keeps each frozen weight's cast copy from one block to the
next (cast once per run, not once per phase), and the float32 originals, which autocast then
never reads, give their resident pages back to the OS where they are mapped from the checkpoint
file (medrl.utils.pages; merging LoRA reads the adapted layers' originals again, and gives them
back after). Without them, a bfloat16-mixed GRPO step on a CPU holds every weight twice, once
in each dtype.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from medrl.sharding import weights_sharded
from medrl.utils.pages import release_file_pages


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """The peft LoRA layers of `model` (empty for a model without LoRA)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return []
    return [module for module in model.modules() if isinstance(module, LoraLayer)]


def can_merge_exactly(model: nn.Module) -> bool:
    """True when W + scale * B@A is exactly (up to float32 rounding) what the adapter layers
    compute: every LoRA layer wraps a plain float32/float64 nn.Linear, is unmerged, enabled,
    without DoRA or LoRA bias, and no module is swapped by modules_to_save (disabling the
    adapter would switch those off too). In bfloat16 the merged weight would round small
    adapter updates away, so such models sample through peft's unmerged layers.

    Under FSDP (medrl.sharding) each weight is, between forwards, a view of this process's
    flat shard, and each forward re-points the layers at the gathered flat parameter: a weight
    cannot be merged there, and a swapped one would be replaced by the next forward (with the
    adapters disabled meanwhile, they would silently drop out). Under DeepSpeed ZeRO-3 a weight
    is an empty placeholder between forwards. Sharded models sample unmerged."""
    if weights_sharded(model):
        return False
    layers = lora_layers(model)
    if not layers or not hasattr(model, "disable_adapter"):
        return False
    if any(type(module).__name__ == "ModulesToSaveWrapper" for module in model.modules()):
        return False
    for layer in layers:
        base = layer.get_base_layer()
        if type(base) is not nn.Linear or base.weight.dtype not in (torch.float32, torch.float64):
            return False
        if layer.merged or getattr(layer, "disable_adapters", False):
            return False
        for name in layer.active_adapters:
            if layer.use_dora.get(name, False) or getattr(layer, "lora_bias", {}).get(name, False):
                return False
    return True


@contextmanager
def merged_lora(
    model: nn.Module, dtype: torch.dtype | None = None, release_pages: bool = False
) -> Iterator[bool]:
    """Inside the block `model` computes with merged weights and adapters bypassed; yields True.

    Where merging would not be exact (see can_merge_exactly) nothing changes and it yields
    False. Gradients are not meant to flow inside (merged weights are plain tensors).
    dtype: each merged weight is then cast to it (autocast's dtype: the numbers autocast_weights
    would give it, without keeping the float32 merge). release_pages: the base weights read for
    the merge give their file-backed pages back afterwards (medrl.utils.pages).
    """
    if not can_merge_exactly(model):
        yield False
        return
    layers = lora_layers(model)
    with torch.no_grad():
        merged = [(layer.get_base_layer(), _merged_weight(layer, dtype)) for layer in layers]
    if release_pages:
        release_file_pages(base.weight for base, _ in merged)
    with swapped_weights(merged), model.disable_adapter():
        yield True


def _merged_weight(layer: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """W + the delta of every active adapter of a LoRA layer (a new tensor; no gradients),
    summed in W's dtype and then cast to `dtype` if given."""
    merged = layer.get_base_layer().weight.detach().clone()
    for name in layer.active_adapters:
        if name in layer.lora_A:
            merged += layer.get_delta_weight(name).to(merged.dtype)
    return merged if dtype is None else merged.to(dtype)


@contextmanager
def swapped_weights(replacements: Iterable[tuple[nn.Module, torch.Tensor]]) -> Iterator[None]:
    """Inside the block each module's weight is a frozen Parameter holding its replacement
    tensor (computed under no_grad as the iterable yields it); the original Parameter objects,
    untouched, are put back afterwards, also when the block raises."""
    originals: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        with torch.no_grad():
            for module, tensor in replacements:
                originals.append((module, module.weight))
                module.weight = nn.Parameter(tensor, requires_grad=False)
        yield
    finally:
        for module, weight in originals:
            module.weight = weight


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes matmuls in on `device`, or None where autocast is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


@dataclass
class _CastCopy:
    source: weakref.ref  # the weight it was cast from
    version: int  # the source's version counter when cast (in-place changes bump it)
    where: tuple  # the source's (data pointer, shape, device): a re-pointed `.data` moves it
    copy: torch.Tensor


def _where(weight: torch.Tensor) -> tuple:
    return weight.data_ptr(), tuple(weight.shape), weight.device


class CastCopies:
    """Frozen weights' copies in autocast's dtype, kept from one autocast_weights block to the
    next: each weight is cast once per run rather than once per phase, and cast again if it
    changed in place (its version counter), was re-pointed (`.data = ...`, `.to()`) or another
    dtype is asked for. An in-place change made through `.data` (``w.data += x``) moves neither,
    so it is not seen: medrl changes no frozen weight that way, and peft's merge_adapter, which
    does, marks its layers merged, and autocast_weights then casts afresh.

    With `release_sources`, a weight's float32 pages go back to the OS once its copy is made,
    where they are mapped from the checkpoint file (medrl.utils.pages): autocast never reads them
    again. Only those copies are kept then; a weight held in memory (e.g. a reference model
    copied in the process) is cast per block as before, so that its copy does not stay alive
    between phases (sampling) without any saving to show for it.

    A copy lives as long as its source: every `cast` first forgets the copies of weights that
    no longer exist."""

    def __init__(self, release_sources: bool = False) -> None:
        self.release_sources = release_sources
        self._copies: dict[int, _CastCopy] = {}

    def __len__(self) -> int:
        return len(self._copies)

    def cast(self, weights: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
        """Each weight's copy in `dtype` (kept, or made now), in order."""
        self._drop_orphans()
        copies, made = [], []
        for weight in weights:
            kept = self._copies.get(id(weight))
            if kept is not None and self._current(kept, weight, dtype):
                copies.append(kept.copy)
                continue
            copy = weight.detach().to(dtype)
            entry = _CastCopy(weakref.ref(weight), weight._version, _where(weight), copy)
            self._copies[id(weight)] = entry
            copies.append(copy)
            made.append(weight)
        if self.release_sources and made:
            for weight, released in zip(made, release_file_pages(made), strict=True):
                if not released:  # in memory: nothing saved by keeping its copy
                    del self._copies[id(weight)]
        return copies

    @staticmethod
    def _current(kept: _CastCopy, weight: torch.Tensor, dtype: torch.dtype) -> bool:
        return (
            kept.source() is weight
            and kept.version == weight._version
            and kept.where == _where(weight)
            and kept.copy.dtype == dtype
        )

    def _drop_orphans(self) -> None:
        """Forget the copies whose source no longer exists (e.g. a rollout's merged weights)."""
        for key in [key for key, kept in self._copies.items() if kept.source() is None]:
            del self._copies[key]


@contextmanager
def autocast_weights(
    model: nn.Module, device: torch.device, copies: CastCopies | None = None
) -> Iterator[torch.dtype | None]:
    """Inside the block every frozen plain nn.Linear weight of `model` is a copy cast once to
    the autocast dtype; yields that dtype, or None (nothing changes) when autocast is off on
    `device` or the weights are sharded (FSDP, ZeRO-3). The weights the model holds on entry
    (merged ones inside merged_lora) are the ones cast, and the ones put back on exit.
    copies: where the copies are kept between blocks (CastCopies); None: made for this block.

    Exactly the numbers autocast computes: it casts a Linear's weight to its dtype on every
    call, and caches the cast only for weights that require gradients (which are left to it
    here). Gradients still flow to the inputs and to trainable weights; the frozen copies are
    plain tensors. Measured on this CPU (SmolLM2-135M, bf16): a decode step otherwise re-casts
    the whole model once per token, and the log-prob passes once per micro-batch.
    """
    dtype = autocast_dtype(device)
    if dtype is None or weights_sharded(model):  # sharded weights: see can_merge_exactly
        yield None
        return
    frozen = [
        module
        for module in model.modules()
        if type(module) is nn.Linear
        and not module.weight.requires_grad
        and module.weight.dtype != dtype
    ]
    weights = [module.weight for module in frozen]
    if any(layer.merged for layer in lora_layers(model)):  # peft merged into the weights' .data
        copies = None
    if copies is None:
        cast = [weight.detach().to(dtype) for weight in weights]
    else:
        cast = copies.cast(weights, dtype)
    with swapped_weights(zip(frozen, cast, strict=True)):
        yield dtype
