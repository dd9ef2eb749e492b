"""What preflight may know about the model without its weights: the tokenizer and the context
window, each None (with a note saying why) when it cannot be had without loading, converting
or building weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medrl.models import ModelLoadError, ModelSpec, load_tokenizer, materialize
from medrl.models.materialize import gguf_cache_dir

# What a missing or unreadable model folder raises on the way to from_pretrained.
PROBE_ERRORS = (ModelLoadError, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class ModelProbe:
    """tokenizer: as `load_tokenizer` gives it (pad token set); context: max_position_embeddings;
    notes: why either is None."""

    tokenizer: Any | None
    context: int | None
    notes: list[str] = field(default_factory=list)


def weights_free_folder(spec: ModelSpec) -> str | None:
    """Where from_pretrained reads the spec's config and tokenizer, if that needs no weights.

    pretrained and checkpoint: the hub id or folder itself. gguf: the converted cache folder,
    only once a run has converted it (converting is what preflight must not do). tiny_random:
    None; its config is `tiny_config` and its tokenizer `tokenizer_path`.
    """
    if spec.source in ("pretrained", "checkpoint"):
        return materialize(spec)  # for these two, a path computation, nothing loaded
    if spec.source == "gguf":
        folder = gguf_cache_dir(spec)
        return str(folder) if (folder / "config.json").is_file() else None
    return None


def preflight_tokenizer(spec: ModelSpec) -> tuple[Any | None, str | None]:
    """(tokenizer, None), or (None, why) when it cannot be had without loading weights."""
    try:
        where = spec.tokenizer_path or weights_free_folder(spec)
        if where is None:
            return None, (
                f"model {spec.name} (source {spec.source}) has no tokenizer before its first "
                "conversion; tokenizer checks skipped (they run once the cache exists)"
            )
        return load_tokenizer(spec, where), None
    except PROBE_ERRORS as error:
        return None, f"tokenizer of {spec.name} not loaded ({error}); tokenizer checks skipped"


def context_window(spec: ModelSpec) -> tuple[int | None, str | None]:
    """(max_position_embeddings, None), or (None, why) when the config cannot be read cheaply."""
    from transformers import AutoConfig

    try:
        if spec.source == "tiny_random":
            config = AutoConfig.for_model(str(spec.architecture), **spec.tiny_config)
        else:
            folder = weights_free_folder(spec)
            if folder is None:
                return None, f"model {spec.name}: no config before its first conversion"
            config = AutoConfig.from_pretrained(
                folder, revision=spec.revision, trust_remote_code=spec.trust_remote_code
            )
    except PROBE_ERRORS as error:
        return None, f"config of model {spec.name} not read ({error})"
    window = getattr(config, "max_position_embeddings", None)
    if not isinstance(window, int):
        return None, f"model {spec.name}: its config has no max_position_embeddings"
    return window, None


def probe_model(spec: ModelSpec, tokenizer: Any | None = None) -> ModelProbe:
    """Tokenizer (the given one, else loaded if cheap) and context window of `spec`."""
    notes = []
    if tokenizer is None:
        tokenizer, note = preflight_tokenizer(spec)
        notes += [note] if note else []
    window, note = context_window(spec)
    notes += [note] if note else []
    return ModelProbe(tokenizer, window, notes)
