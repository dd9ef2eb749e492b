"""The reward functions: pure ``(completion, sample, **params) -> float``.

Each parses the completion itself (parsing is linear and cheap), so each can be tested and
reused alone. Malformed model output scores 0, never raises; a bad parameter or a rollout that
did not count tokens raises, because those are bugs in the caller, not in the model.
"""

from __future__ import annotations

from medrl.prompts._tags import count_errors, open_tag, tag_strings
from medrl.prompts.free_text import reference_text
from medrl.prompts.json_format import JsonFormat, decode_json
from medrl.rewards import overlap
from medrl.rewards.base import RewardSample

_REASONING_TAGS = ("reasoning", "answer")


def correctness(completion: str, sample: RewardSample) -> float:
    """1 when the strict parse's answer equals the gold label, else 0. In [0, 1].

    Seeds 000 (reward_correctness), 001 (R_accuracy), 004 (accuracy). What counts as "the
    answer" is the format's parser: e.g. the JSON format reads ``predicted_category`` from any
    valid JSON object, as seed 001 does, even when another schema field is missing.
    """
    return 1.0 if sample.parse(completion).answer == sample.record.answer else 0.0


def format_reward(completion: str, sample: RewardSample) -> float:
    """1 when the completion follows ``sample.output_format`` exactly (``format_ok``). In [0, 1].

    Seed 000 reward_format (XML structure); for JSON this is seed 001's schema check.
    """
    return 1.0 if sample.parse(completion).format_ok else 0.0


def json_valid(completion: str, sample: RewardSample) -> float:
    """Seed 001 R_json: 1 when the whole stripped completion is one JSON value. In [0, 1].

    Independent of the sample's format. Code fences or trailing text make it 0; so do NaN and
    Infinity, which Python's ``json.loads`` accepts but JSON does not.
    """
    return 1.0 if decode_json(completion).error is None else 0.0


def json_schema(completion: str, sample: RewardSample) -> float:
    """Seed 001 R_schema: 1 when the JSON object has a valid ``predicted_category``, a
    ``confidence`` number in [0, 1] and a non-empty ``reason``. In [0, 1].

    Uses the sample's format when it is a `JsonFormat` (so its ``case_sensitive`` applies),
    else the default `JsonFormat`.
    """
    fmt = sample.output_format if isinstance(sample.output_format, JsonFormat) else JsonFormat()
    return 1.0 if fmt.parse(completion, sample.record.labels).schema_ok else 0.0


def check_explanation_length_params(min_full: int, max_full: int, min_partial: int) -> None:
    """Raise ValueError unless ``0 <= min_partial <= min_full <= max_full``."""
    if not 0 <= min_partial <= min_full <= max_full:
        raise ValueError(
            "explanation_length needs 0 <= min_partial <= min_full <= max_full, got "
            f"min_partial={min_partial}, min_full={min_full}, max_full={max_full}"
        )


def explanation_length(
    completion: str,
    sample: RewardSample,
    min_full: int = 20,
    max_full: int = 200,
    min_partial: int = 10,
) -> float:
    """Seed 000 reward_explanation_length, on the parsed free text. In {0, 0.5, 1}.

    With n = characters of the stripped explanation / reason / reasoning:
    1.0 if min_full <= n <= max_full; else 0.5 if n >= min_partial (too long also gets 0.5);
    else 0. No explanation (unparseable completion, letter format) scores 0.
    """
    check_explanation_length_params(min_full, max_full, min_partial)
    explanation = sample.parse(completion).explanation
    if not explanation:  # parsers give None, never "", but min_partial = 0 must not pay for it
        return 0.0
    n = len(explanation)
    if min_full <= n <= max_full:
        return 1.0
    return 0.5 if n >= min_partial else 0.0


def reasoning_tags(completion: str, sample: RewardSample) -> float:
    """Seed 002 ReasoningTagsReward: 1 when the tag structure is right, else 0. In [0, 1].

    Exactly one ``<reasoning>...</reasoning>`` with non-empty content, followed by exactly one
    ``<answer>...</answer>``, neither nested nor repeated. Only the structure is checked: text
    around the tags and the answer's content are the strict `format_reward`'s business, so this
    reward still pays a model that gets the tags right but the label wrong.
    """
    if count_errors(completion, _REASONING_TAGS) is not None:
        return 0.0
    r_open, r_close, a_open, a_close = (
        completion.find(tag) for tag in tag_strings(_REASONING_TAGS)
    )
    if not r_open < r_close < a_open < a_close:
        return 0.0
    reasoning = completion[r_open + len(open_tag("reasoning")) : r_close]
    return 1.0 if reasoning.strip() else 0.0


def check_brevity_params(target_tokens: int, max_tokens: int) -> None:
    """Raise ValueError unless ``0 <= target_tokens < max_tokens``."""
    if not 0 <= target_tokens < max_tokens:
        raise ValueError(
            "brevity needs 0 <= target_tokens < max_tokens, got "
            f"target_tokens={target_tokens}, max_tokens={max_tokens}"
        )


def brevity(
    completion: str, sample: RewardSample, target_tokens: int = 64, max_tokens: int = 256
) -> float:
    """Seed 004's token efficiency as a reward: shorter completions score higher. In [0, 1].

    With n = ``sample.completion_tokens``: 1 if n <= target_tokens; 0 if n >= max_tokens;
    linear in between, ``(max_tokens - n) / (max_tokens - target_tokens)``.
    Raises ValueError when the rollout did not provide the token count.
    """
    check_brevity_params(target_tokens, max_tokens)
    n = sample.completion_tokens
    if n is None:
        raise ValueError(
            "brevity needs RewardSample.completion_tokens; the rollout must provide the token "
            "count of each completion"
        )
    if n <= target_tokens:
        return 1.0
    if n >= max_tokens:
        return 0.0
    return (max_tokens - n) / (max_tokens - target_tokens)


def token_efficiency(
    completion: str, sample: RewardSample, target_tokens: int = 64, max_tokens: int = 256
) -> float:
    """correctness * brevity: short answers pay only when right (seed 004). In [0, 1]."""
    return correctness(completion, sample) * brevity(
        completion, sample, target_tokens=target_tokens, max_tokens=max_tokens
    )


def _answer_and_reference(completion: str, sample: RewardSample) -> tuple[str | None, str]:
    """(the parsed free text, the record's reference); the reference is checked first, so a
    dataset without references fails on its first completion whatever the model wrote."""
    reference = reference_text(sample.record)
    return sample.parse(completion).explanation, reference


def token_f1(completion: str, sample: RewardSample) -> float:
    """SQuAD token F1 of the parsed free text against the record's reference. In [0, 1].

    The free text is what the format parses as prose: the whole answer with format=free_text,
    the explanation with xml / tags / json. An unparsed completion scores 0 (and is counted in
    reward/parse_fail); a record without a reference raises MissingReferenceError. Seed 003's
    open-ended metric, as a reward (medrl/rewards/overlap.py gives the definition).
    """
    answer, reference = _answer_and_reference(completion, sample)
    return overlap.token_f1(answer, reference) if answer else 0.0


def rouge_l(completion: str, sample: RewardSample, use_stemmer: bool = True) -> float:
    """ROUGE-L F-measure of the parsed free text against the record's reference. In [0, 1].

    Parsing, unparsed completions and missing references as in `token_f1`.
    """
    answer, reference = _answer_and_reference(completion, sample)
    return overlap.rouge_l(answer, reference, use_stemmer) if answer else 0.0
