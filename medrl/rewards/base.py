"""What every reward function receives besides the completion text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medrl.data.records import QARecord
from medrl.prompts.base import OutputFormat, ParsedCompletion


@dataclass(frozen=True)
class RewardSample:
    """The context of one completion: the question, the format asked for, and its token count.

    completion_tokens:  number of generated tokens, filled in by the rollout (the rewards never
                        tokenize); None where nobody counted, which only length rewards reject.
    """

    record: QARecord
    output_format: OutputFormat
    completion_tokens: int | None = None

    def parse(self, completion: str) -> ParsedCompletion:
        """`completion` parsed strictly by this sample's format against the record's labels."""
        return self.output_format.parse(completion, self.record.labels)


# (completion, sample, **params) -> float; params are keyword arguments with defaults.
RewardFn = Callable[..., float]
