"""Predictions: strict scoring, JSONL round trip, and predict on the tiny Qwen3 policy."""

from __future__ import annotations

import json
import stat

import pytest

from medrl.data.records import QARecord
from medrl.evaluation import (
    Prediction,
    make_prediction,
    predict,
    read_predictions,
    write_predictions,
)
from medrl.prompts import JsonFormat, LetterFormat, XmlFormat, build_messages, render_prompt
from medrl.rollout import SamplingSettings, generate

RECORDS = [
    QARecord(
        id="mcq-7",
        question="Which vitamin deficiency causes scurvy?",
        options={"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D", "D": "Vitamin K"},
        answer="B",
        subject="Biochemistry",
    ),
    QARecord(
        id="pqa-2",
        question="Does early mobilisation shorten hospital stay?",
        options={"yes": "yes", "no": "no", "maybe": "maybe"},
        answer="maybe",
        context="Sixty patients were randomised.",
    ),
    QARecord(
        id="mcq-3",
        question="Which nerve supplies the deltoid?",
        options={"A": "Radial", "B": "Axillary", "C": "Median", "D": "Ulnar"},
        answer="B",
        subject="Anatomy",
    ),
]
GREEDY = SamplingSettings(greedy=True, max_new_tokens=4)


def sample_predictions() -> list[Prediction]:
    fmt = JsonFormat()
    record = RECORDS[0]
    return [
        make_prediction(record, "prompt ü", fmt.render_target(record), fmt, 12, False),
        make_prediction(RECORDS[1], "p", "{not json", fmt, 4, True),
    ]


def test_a_well_formed_right_answer_is_correct_and_formatted():
    fmt = XmlFormat()
    record = RECORDS[0]
    pred = make_prediction(record, "p", fmt.render_target(record), fmt, 9, False)
    assert (pred.answer, pred.gold, pred.correct, pred.format_ok) == ("B", "B", True, True)
    assert pred.error is None and pred.subject == "Biochemistry"


def test_unparseable_output_has_no_answer_and_is_wrong_even_if_it_names_the_gold():
    pred = make_prediction(RECORDS[0], "p", "The answer is B", LetterFormat(), 5, False)
    assert pred.answer is None and not pred.correct and not pred.format_ok
    assert pred.error


def test_json_levels_are_carried_over():
    valid, invalid = sample_predictions()
    assert valid.json_valid and valid.schema_ok and valid.correct
    assert not invalid.json_valid and not invalid.schema_ok and invalid.answer is None


def test_jsonl_round_trip_is_exact_and_atomic(tmp_path):
    predictions = sample_predictions()
    path = tmp_path / "eval" / "predictions.jsonl"
    write_predictions(path, predictions[:1])
    assert write_predictions(path, predictions) == path  # overwrites in place
    assert read_predictions(path) == predictions
    assert [p.name for p in path.parent.iterdir()] == ["predictions.jsonl"], "no temp file left"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["prompt"] == "prompt ü"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, sample_predictions())

    def broken():
        yield sample_predictions()[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_predictions(path, broken())
    assert read_predictions(path) == sample_predictions()
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]


def test_reading_a_malformed_file_names_the_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, sample_predictions())
    good = path.read_text(encoding="utf-8")
    path.write_text(good + "{broken\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"predictions.jsonl:3"):
        read_predictions(path)
    extra = dict(sample_predictions()[0].to_json(), surprise=1)
    with pytest.raises(ValueError, match="surprise"):
        Prediction.from_json(extra)
    missing = sample_predictions()[0].to_json()
    del missing["gold"]
    with pytest.raises(ValueError, match="gold"):
        Prediction.from_json(missing)


def test_predict_on_tiny_qwen3_gives_one_consistent_prediction_per_record(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    fmt, kwargs = XmlFormat(), tiny_policy.chat_template_kwargs
    predictions = predict(model, tok, RECORDS, fmt, kwargs, GREEDY, batch_size=2, progress=True)
    assert [p.id for p in predictions] == [r.id for r in RECORDS]
    for record, pred in zip(RECORDS, predictions, strict=True):
        prompt = render_prompt(tok, build_messages(record, fmt), kwargs)
        assert pred.prompt == prompt
        alone = generate(model, tok, [prompt], GREEDY)
        assert pred.completion == alone.texts[0]
        assert (pred.num_tokens, pred.truncated) == (alone.num_tokens[0], alone.truncated[0])
        assert 1 <= pred.num_tokens <= GREEDY.max_new_tokens
        parsed = fmt.parse(pred.completion, record.labels)
        assert pred.answer == parsed.answer and pred.format_ok == parsed.format_ok
        assert (pred.json_valid, pred.schema_ok, pred.error) == (
            parsed.json_valid,
            parsed.schema_ok,
            parsed.error,
        )
        assert pred.gold == record.answer and pred.subject == record.subject
        assert pred.correct == (parsed.answer == record.answer)
    assert predict(model, tok, [], fmt, kwargs, GREEDY) == []


def test_predict_with_k_samples_groups_them_per_record_and_is_reproducible(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    fmt, kwargs = XmlFormat(), tiny_policy.chat_template_kwargs
    sampled = SamplingSettings(temperature=1.0, max_new_tokens=6)
    first = predict(model, tok, RECORDS, fmt, kwargs, sampled, batch_size=2, num_samples=3, seed=5)
    assert [(p.id, p.sample) for p in first] == [(r.id, s) for r in RECORDS for s in range(3)]
    again = predict(model, tok, RECORDS, fmt, kwargs, sampled, batch_size=2, num_samples=3, seed=5)
    assert [p.completion for p in again] == [p.completion for p in first], "seeded"
    assert len({p.completion for p in first}) > len(RECORDS), "samples of a record differ"


def test_predict_refuses_k_greedy_samples(tiny_policy):
    with pytest.raises(ValueError, match="greedy=False"):
        predict(
            tiny_policy.model,
            tiny_policy.tokenizer,
            RECORDS,
            XmlFormat(),
            {},
            GREEDY,
            num_samples=2,
        )


def test_batching_by_prompt_length_returns_records_in_their_own_order(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    fmt, kwargs = XmlFormat(), tiny_policy.chat_template_kwargs
    one_batch = predict(model, tok, RECORDS, fmt, kwargs, GREEDY, batch_size=len(RECORDS))
    per_record = predict(model, tok, RECORDS, fmt, kwargs, GREEDY, batch_size=1)
    reversed_input = predict(model, tok, RECORDS[::-1], fmt, kwargs, GREEDY, batch_size=2)
    assert [p.id for p in reversed_input] == [r.id for r in RECORDS[::-1]]
    assert [p.completion for p in one_batch] == [p.completion for p in per_record]
    assert [p.completion for p in reversed_input] == [p.completion for p in one_batch][::-1]
