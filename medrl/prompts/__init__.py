"""Output formats (system prompt + SFT target + strict parser) and prompt rendering.

A format is picked by name from the ``format`` config group (conf/format/<name>.yaml, which
instantiates the class directly) or in code with `get_format`.
"""

from __future__ import annotations

from typing import Any

from medrl.prompts.base import OutputFormat, ParsedCompletion
from medrl.prompts.free_text import FreeTextFormat, MissingReferenceError, reference_text
from medrl.prompts.json_format import JsonFormat
from medrl.prompts.letter import LetterFormat
from medrl.prompts.messages import build_messages, render_prompt, render_user_message
from medrl.prompts.tags import TagsFormat
from medrl.prompts.xml import XmlFormat

FORMATS: dict[str, type[OutputFormat]] = {
    XmlFormat.name: XmlFormat,
    JsonFormat.name: JsonFormat,
    TagsFormat.name: TagsFormat,
    LetterFormat.name: LetterFormat,
    FreeTextFormat.name: FreeTextFormat,
}


def get_format(name: str, **kwargs: Any) -> OutputFormat:
    """Instantiate the format registered as `name` with `kwargs` as its fields."""
    try:
        cls = FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown output format {name!r}; valid names: {sorted(FORMATS)}"
        ) from None
    return cls(**kwargs)


__all__ = [
    "FORMATS",
    "FreeTextFormat",
    "JsonFormat",
    "LetterFormat",
    "MissingReferenceError",
    "OutputFormat",
    "ParsedCompletion",
    "TagsFormat",
    "XmlFormat",
    "build_messages",
    "get_format",
    "render_prompt",
    "reference_text",
    "render_user_message",
]
