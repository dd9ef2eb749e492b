"""Text helpers shared by the output formats: label matching, label lists, SFT explanations.

Everything here runs in time linear in its input (str methods, and no regex that can
backtrack), because parsers call these on arbitrary model output and SFT targets on arbitrary
dataset text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medrl.data.records import QARecord

_LABEL_PLACEHOLDERS = {"label": "", "text": ""}
# Splits text into brackets and the runs between them (captured, so they are kept).
_BRACKETS = re.compile(r"([<>])")


def join_labels(labels: Sequence[str]) -> str:
    """Human list of labels: ``("A", "B", "C", "D")`` -> ``"A, B, C or D"``."""
    if not labels:
        raise ValueError("an output format needs at least one answer label")
    if len(labels) == 1:
        return labels[0]
    return f"{', '.join(labels[:-1])} or {labels[-1]}"


def preview(text: str, limit: int = 20) -> str:
    """A short repr for error messages, so a huge completion does not flood the logs."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def match_label(text: str, labels: Sequence[str], case_sensitive: bool) -> str | None:
    """The label `text` names exactly, or None.

    With ``case_sensitive=False`` the match ignores case and returns the canonical spelling from
    `labels`; an exact match always wins, so labels differing only by case stay distinguishable.
    """
    if text in labels:
        return text
    if case_sensitive:
        return None
    folded = text.casefold()
    for label in labels:
        if label.casefold() == folded:
            return label
    return None


def neutralize(text: str, forbidden: Sequence[str]) -> str:
    """Remove the angle brackets of every occurrence of a `forbidden` tag string.

    ``"see </explanation> here"`` -> ``"see /explanation here"``. Only exact tag strings are
    touched, so ordinary text such as ``"<5 mg"`` survives. Removing brackets can create a new
    occurrence (``"<<answer>>"`` -> ``"<answer>"`` -> ``"answer"``), and that is removed too:
    the result is what replacing occurrences until none is left gives (the order does not
    matter: occurrences never overlap), in one pass, so ``"<" * n + "answer" + ">" * n`` costs
    O(n), not the O(n^2) of repeated replacing.

    `forbidden` holds tag strings ``<name>`` / ``</name>`` (no bracket inside the name).
    """
    inners = {_tag_inner(tag) for tag in forbidden}
    if not any(tag in text for tag in forbidden):
        return text
    longest = max(len(inner) for inner in inners)
    out: list[str] = []  # non-empty pieces: "<", ">" or a run of text without brackets
    brackets: list[int] = []  # indices in `out` of the brackets still in the output
    # Splitting on a one-character class is linear: there is nothing to backtrack over.
    for piece in _BRACKETS.split(text):
        if not piece:
            continue
        if piece == ">" and brackets and out[brackets[-1]] == "<":
            opened = brackets[-1]
            if _short_join(out, opened + 1, longest) in inners:
                # "<" + inner + ">" becomes inner: drop the "<" and never add the ">". The
                # text before it is bracket-free up to the previous bracket, so a tag that
                # now closes around it is found when its own ">" arrives.
                del out[opened]
                brackets.pop()
                continue
        if piece in ("<", ">"):
            brackets.append(len(out))
        out.append(piece)
    return "".join(out)


def _tag_inner(tag: str) -> str:
    """``"</answer>"`` -> ``"/answer"``; ValueError for anything that is not one tag string."""
    inner = tag[1:-1]
    if len(tag) < 3 or tag[0] != "<" or tag[-1] != ">" or "<" in inner or ">" in inner:
        raise ValueError(f"neutralize needs tag strings like '<name>', got {tag!r}")
    return inner


def _short_join(pieces: list[str], start: int, limit: int) -> str | None:
    """``"".join(pieces[start:])`` when at most `limit` characters long, else None; stops
    after `limit` + 1 pieces (pieces are non-empty), so a long tail costs nothing."""
    joined: list[str] = []
    size = 0
    for index in range(start, len(pieces)):
        size += len(pieces[index])
        if size > limit:
            return None
        joined.append(pieces[index])
    return "".join(joined)


def truncate_words(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, at the last whitespace when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    if text[max_chars].isspace():
        return cut.rstrip()
    boundary = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
    # A single word longer than the limit is cut mid-word rather than dropped.
    return cut[:boundary].rstrip() if boundary > 0 else cut


def check_explanation_fields(fallback: str, max_chars: int, forbidden: Sequence[str] = ()) -> None:
    """Validate a format's explanation fields at construction (config errors, not model output)."""
    if max_chars < 1:
        raise ValueError(f"max_explanation_chars must be >= 1, got {max_chars}")
    try:
        filled = fallback.format(**_LABEL_PLACEHOLDERS)
    except (AttributeError, KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"explanation_fallback {fallback!r} may only use the placeholders {{label}} and "
            f"{{text}}: {err!r}"
        ) from err
    if not neutralize(filled, forbidden).strip():
        raise ValueError(
            f"explanation_fallback {fallback!r} must contain text besides its placeholders"
        )


def target_explanation(
    record: QARecord, fallback: str, max_chars: int, forbidden: Sequence[str] = ()
) -> str:
    """The explanation an SFT target carries: never empty, never containing `forbidden` tags.

    Uses ``record.explanation`` when it has text, else `fallback` filled with ``{label}`` and
    ``{text}``; then neutralizes `forbidden` tag strings and truncates on a word boundary.
    """
    for raw in (
        record.explanation or "",
        fallback.format(label=record.answer, text=record.answer_text),
    ):
        text = truncate_words(neutralize(raw.strip(), forbidden).strip(), max_chars)
        if text:
            return text
    # check_explanation_fields guarantees the fallback leaves text, so this is a bug.
    raise AssertionError(f"empty explanation for record {record.id!r}")
