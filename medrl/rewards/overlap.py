"""Text overlap of one answer with one reference, each in [0, 1]; pure and per item.

Shared by the text rewards (medrl/rewards/functions.py) and the open-ended evaluation metrics
(medrl/evaluation/text_metrics.py), so a reward and the metric it optimizes cannot drift apart.
The scores come from well-kept libraries rather than hand-written code:

- exact match and token F1: SQuAD v1.1's official definitions (Rajpurkar et al. 2016) as
  torchmetrics implements them (`torchmetrics.functional.text.squad`): both texts are
  lower-cased, punctuation and the articles a / an / the removed, whitespace collapsed; EM is 1
  when the normalized texts are equal; F1 is the harmonic mean of precision and recall of the
  bag of normalized tokens (shared = sum over tokens of min(count in answer, count in reference)).
- ROUGE-L: Google's `rouge_score` package (Lin 2004): F-measure of the longest common
  subsequence of the two token sequences, precision = LCS / answer tokens, recall = LCS /
  reference tokens; tokens are the lower-cased alphanumeric runs, Porter-stemmed when
  `use_stemmer` (the usual setting of summarization papers).

An answer longer than MAX_ANSWER_CHARS is scored on its first MAX_ANSWER_CHARS characters: the
longest common subsequence takes time proportional to the product of the two lengths, and no
completion of a realistic max_new_tokens comes near that length (it bounds adversarial input).
"""

from __future__ import annotations

from functools import lru_cache

from rouge_score import rouge_scorer
from torchmetrics.functional.text import squad

MAX_ANSWER_CHARS = 20_000


def _squad(answer: str, reference: str) -> dict[str, float]:
    scores = squad(
        preds={"prediction_text": answer[:MAX_ANSWER_CHARS], "id": "0"},
        target={"answers": {"text": [reference]}, "id": "0"},
    )
    return {name: float(value) / 100.0 for name, value in scores.items()}  # percent -> [0, 1]


def exact_match(answer: str, reference: str) -> float:
    """SQuAD exact match after normalization: 1.0 or 0.0."""
    return _squad(answer, reference)["exact_match"]


def token_f1(answer: str, reference: str) -> float:
    """SQuAD token F1 = 2 P R / (P + R) over normalized token bags; 0 with no shared token."""
    return _squad(answer, reference)["f1"]


@lru_cache(maxsize=2)
def _rouge_l_scorer(use_stemmer: bool) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(answer: str, reference: str, use_stemmer: bool = True) -> float:
    """ROUGE-L F-measure = 2 P R / (P + R), P = LCS / |answer|, R = LCS / |reference|."""
    scored = answer[:MAX_ANSWER_CHARS]
    return float(_rouge_l_scorer(use_stemmer).score(reference, scored)["rougeL"].fmeasure)
