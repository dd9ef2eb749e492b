"""Checks 7 and 8: prompt lengths against the model's context, and the prompts shown."""

from __future__ import annotations

import importlib
import logging

import pytest

from medrl.preflight import PreflightError, preflight_tokenizer, run_preflight


def test_prompt_plus_max_new_tokens_beyond_the_context_names_the_grpo_key(preflight_error):
    error = preflight_error("grpo.module.sampling.max_new_tokens=100000")
    (failure,) = error.failures
    assert failure.key == "grpo.module.sampling.max_new_tokens"
    assert failure.message.startswith("grpo.module.sampling.max_new_tokens=100000: the longest")
    assert "exceeds the model's context of 4096 tokens" in failure.message
    assert "lower it to at most" in failure.message


def test_each_generating_stage_is_checked_with_its_own_length(preflight_error):
    error = preflight_error("evaluation.sampling.max_new_tokens=5000")
    assert [f.key for f in error.failures] == ["evaluation.sampling.max_new_tokens"]


def test_a_short_context_fails_generation_and_sft_examples(preflight_error):
    error = preflight_error("model.tiny_config.max_position_embeddings=128")
    assert [f.key for f in error.failures] == [
        "grpo.module.sampling.max_new_tokens",
        "evaluation.sampling.max_new_tokens",
        "validation.max_new_tokens",  # the val pool's prompts too (validation during training)
        "sft.max_seq_length",
    ]
    assert "the longest SFT example keeps" in error.failures[-1].message
    assert "set sft.max_seq_length <= 128" in error.failures[-1].message


def test_sft_examples_cut_by_max_seq_length_are_a_warning_with_counts(preflight):
    report = preflight("sft.max_seq_length=160")
    (warning,) = report.with_status("warn")
    assert warning.key == "sft.max_seq_length"
    assert warning.message.startswith("sft.max_seq_length=160: of 8 SFT examples,")
    assert "are cut (answer tokens lost)" in warning.message


def test_no_sft_example_left_with_an_answer_token_is_a_failure(preflight_error):
    error = preflight_error("sft.max_seq_length=50")
    assert error.failures[0].message == (
        "sft.max_seq_length=50: of 8 SFT examples, none keeps an answer token; raise it"
    )


def test_three_prompts_are_shown_as_the_model_gets_them(preflight, smoke, caplog):
    with caplog.at_level(logging.INFO, logger="medrl.preflight"):
        report = preflight()
    pools = smoke().pools
    expected = [("sft", pools["sft"][0].id), ("grpo", pools["grpo"][0].id)]
    expected.append(("eval", pools["eval"][0].id))
    assert [(p.pool, p.record_id) for p in report.prompts] == expected
    for prompt in report.prompts:
        assert prompt.template == "chat" and prompt.tokens > 50
        # Qwen3's template with enable_thinking=false (the model spec's chat_template_kwargs)
        assert prompt.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert prompt.text in caplog.text


def test_show_prompts_sets_how_many(preflight):
    report = preflight("preflight.show_prompts=5", "algorithm=grpo")
    assert [p.pool for p in report.prompts] == ["grpo", "eval", "grpo", "eval", "grpo"]


def test_tiny_random_tokenizer_comes_from_its_tokenizer_path_without_building_weights(
    smoke, monkeypatch
):
    def no_weights(*_):
        raise AssertionError("preflight built or loaded weights")

    # The package re-exports the function `materialize`, which shadows its module's name.
    materialize = importlib.import_module("medrl.models.materialize")
    monkeypatch.setattr(materialize, "_build_tiny", no_weights)
    monkeypatch.setattr(materialize, "_convert_gguf", no_weights)
    monkeypatch.setattr("medrl.models.loading._load_model", no_weights)
    run = smoke()
    tokenizer, note = preflight_tokenizer(run.specs.model)
    assert note is None and tokenizer.chat_template
    report = run_preflight(run.cfg, run.specs, run.pools)  # loads its own tokenizer
    assert report.ok and not report.with_status("skip")


def test_an_unconverted_gguf_model_skips_tokenizer_checks_with_a_note(
    compose, shared_dir, tmp_path
):
    from medrl.components import build_pools, build_specs

    cfg = compose("train", ["debug=smoke", "model=smollm2_135m"])
    cfg.model.cache_dir = str(tmp_path / "empty-cache")  # never converted here
    specs = build_specs(cfg)
    report = run_preflight(cfg, specs, build_pools(specs))
    notes = [r.message for r in report.with_status("skip")]
    assert any("tokenizer checks skipped" in note for note in notes)
    assert "no tokenizer: prompt lengths not checked" in notes
    assert [p.template for p in report.prompts] == ["plain"] * 3
    assert not (tmp_path / "empty-cache").exists(), "preflight must not convert the GGUF file"


def test_a_model_whose_tokenizer_cannot_be_reached_is_skipped_not_failed(compose, shared_dir):
    from medrl.components import build_pools, build_specs

    cfg = compose("train", ["debug=smoke", "model=qwen3_0.6b", "model.path=/nonexistent/qwen3"])
    specs = build_specs(cfg)
    report = run_preflight(cfg, specs, build_pools(specs))
    assert report.ok
    assert {r.name for r in report.with_status("skip")} == {"model", "context"}
    with pytest.raises(PreflightError):  # the config checks still run
        run_preflight(
            compose("train", ["debug=smoke", "grpo.module.lr=0"]), specs, build_pools(specs)
        )
