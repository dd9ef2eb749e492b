"""The error every model-loading step raises; its own module so that materialization and the
GGUF sources can both raise it without importing each other."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded; the message says what to change."""
