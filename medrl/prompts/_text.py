"""Text helpers shared by the output formats: label matching, label lists, SFT explanations.

Everything here runs in time linear in its input (str methods only, no backtracking regex),
because parsers call these on arbitrary model output.
"""

from __future__ import annotations

from collections.abc import Sequence

from medrl.data.records import QARecord

_LABEL_PLACEHOLDERS = {"label": "", "text": ""}


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
    touched, so ordinary text such as ``"<5 mg"`` survives. Repeats until none is left, because
    removing brackets can create a new occurrence (``"<<answer>>"``); each pass shortens the text,
    so the loop ends.
    """
    while any(tag in text for tag in forbidden):
        for tag in forbidden:
            text = text.replace(tag, tag.strip("<>"))
    return text


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
