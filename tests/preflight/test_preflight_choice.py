"""Preflight in forced choice (evaluation.mode=choice_logprob): the eval stage generates nothing,
so its generation length is not checked; prompt + longest continuation must fit the context;
an open-ended format is refused, naming evaluation.mode."""

from __future__ import annotations

CHOICE = "evaluation.mode=choice_logprob"


def test_forced_choice_checks_prompt_plus_longest_continuation_not_the_generation_length(
    preflight,
):
    report = preflight(CHOICE, "evaluation.sampling.max_new_tokens=100000")  # unread: passes
    [fit] = [r for r in report.results if r.key == "evaluation.choice.continuation"]
    assert fit.status == "pass"
    assert fit.message.startswith("evaluation.choice.continuation=label: the longest eval item")
    assert "context + 2 continuation tokens" in fit.message  # "\n\n" (moved) + the label
    assert fit.message.endswith("<= the context of 4096")
    [mode] = [r for r in report.results if r.key == "evaluation.mode"]
    assert mode.message == "evaluation.mode=choice_logprob suits format=xml"


def test_a_short_context_fails_forced_choice_by_its_own_key(preflight_error):
    error = preflight_error(CHOICE, "model.tiny_config.max_position_embeddings=128")
    keys = [f.key for f in error.failures]
    assert "evaluation.choice.continuation" in keys
    assert "evaluation.sampling.max_new_tokens" not in keys
    [failure] = [f for f in error.failures if f.key == "evaluation.choice.continuation"]
    assert "more than the model's context of 128 tokens" in failure.message


def test_forced_choice_on_an_open_ended_format_fails_naming_evaluation_mode(preflight_error):
    error = preflight_error(CHOICE, "dataset=pubmedqa", "format=free_text", "reward=free_text")
    [failure] = [f for f in error.failures if f.key == "evaluation.mode"]
    assert failure.message.startswith(
        "evaluation.mode=choice_logprob scores answer options, and format=free_text is "
        "open-ended (no options)"
    )
