"""Strict, linear-time parsing of a fixed sequence of ``<tag>...</tag>`` elements.

Used by the xml and tags formats. No regex: the checks are ``str.count`` / ``str.find`` /
``str.startswith``, each linear in the completion, so a 2 MB adversarial completion parses in
milliseconds and no input can make the parser backtrack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medrl.prompts._text import match_label, preview
from medrl.prompts.base import ParsedCompletion


@dataclass(frozen=True)
class Elements:
    """Result of `parse_elements`: the raw content of each tag, or why the structure is broken."""

    contents: dict[str, str]
    error: str | None = None


def open_tag(name: str) -> str:
    return f"<{name}>"


def close_tag(name: str) -> str:
    return f"</{name}>"


def tag_strings(names: Sequence[str]) -> tuple[str, ...]:
    """Every opening and closing tag string of `names`, e.g. for neutralizing SFT text."""
    return tuple(t for name in names for t in (open_tag(name), close_tag(name)))


def count_errors(text: str, names: Sequence[str]) -> str | None:
    """An error unless every tag of `names` opens exactly once and closes exactly once.

    Requiring exactly one of each rules out repeated elements and nesting in one linear check:
    ``<answer><answer>A</answer></answer>`` has two openings of ``answer``.
    """
    for name in names:
        for tag in (open_tag(name), close_tag(name)):
            count = text.count(tag)
            if count != 1:
                return f"expected exactly one {tag}, found {count}"
    return None


def parse_elements(completion: str, names: Sequence[str]) -> Elements:
    """Parse `completion` as exactly ``<n1>..</n1><n2>..</n2>...`` in the order of `names`.

    Whitespace is allowed around the whole completion and between elements; any other text
    outside the elements, a missing, repeated or nested tag, or the wrong order is an error.
    Contents are returned unstripped; they cannot contain any tag of `names`.
    """
    text = completion.strip()
    error = count_errors(text, names)
    if error is not None:
        return Elements({}, error)
    contents: dict[str, str] = {}
    pos = 0
    for name in names:
        opening, closing = open_tag(name), close_tag(name)
        if not text.startswith(opening, pos):
            where = "at the start" if pos == 0 else "after the previous element"
            return Elements({}, f"expected {opening} {where}")
        start = pos + len(opening)
        end = text.find(closing, start)
        if end == -1:
            return Elements({}, f"{closing} comes before {opening}")
        contents[name] = text[start:end]
        pos = end + len(closing)
        rest = text[pos:]
        pos += len(rest) - len(rest.lstrip())
    if pos != len(text):
        return Elements({}, f"unexpected text after {close_tag(names[-1])}")
    return Elements(contents)


def parse_tagged_answer(
    completion: str,
    labels: Sequence[str],
    names: Sequence[str],
    answer_name: str,
    text_name: str,
    case_sensitive: bool,
) -> ParsedCompletion:
    """The shared parser of the tag formats: structure, then label, then explanation.

    ``answer`` is set whenever the structure is intact and the answer element holds exactly one
    label (whitespace around it allowed); ``format_ok`` additionally needs non-empty free text
    in `text_name`. So ``<answer>A</answer><explanation></explanation>`` is answered but
    ill-formatted, and correctness and format rewards stay independent signals.
    """
    elements = parse_elements(completion, names)
    if elements.error is not None:
        return ParsedCompletion(answer=None, format_ok=False, error=elements.error)
    raw_answer = elements.contents[answer_name].strip()
    explanation = elements.contents[text_name].strip()
    answer = match_label(raw_answer, labels, case_sensitive)
    if answer is None:
        return ParsedCompletion(
            answer=None,
            format_ok=False,
            explanation=explanation or None,
            error=f"{open_tag(answer_name)} holds {preview(raw_answer)}, not one of {list(labels)}",
        )
    if not explanation:
        return ParsedCompletion(
            answer=answer, format_ok=False, error=f"empty {open_tag(text_name)}"
        )
    return ParsedCompletion(answer=answer, format_ok=True, explanation=explanation)
