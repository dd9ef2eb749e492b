"""The user message, the [system, user] messages, and the prompt string a tokenizer renders."""

from __future__ import annotations

import pytest

from medrl.prompts import JsonFormat, XmlFormat, build_messages, render_prompt, render_user_message

MESSAGES = [
    {"role": "system", "content": "Answer medical questions."},
    {"role": "user", "content": "Question: Which nerve?"},
]


class NoTemplateTokenizer:
    """A base-model tokenizer: no chat template; applying one would be a bug."""

    chat_template = None

    def apply_chat_template(self, conversation, **kwargs):
        raise AssertionError("apply_chat_template must not be called without a template")


def test_mcq_user_message_is_the_question_then_one_option_per_line(mcq_record):
    assert render_user_message(mcq_record) == (
        "Question: What is the most common cause of community-acquired pneumonia in adults?\n\n"
        "A. Haemophilus influenzae\n"
        "B. Streptococcus pneumoniae\n"
        "C. Klebsiella pneumoniae\n"
        "D. Staphylococcus aureus"
    )


def test_pubmedqa_user_message_puts_the_context_first_and_asks_for_yes_no_or_maybe(
    pubmedqa_record,
):
    assert render_user_message(pubmedqa_record) == (
        "Context:\nSixty patients were randomised.\nLength of stay fell by 0.4 days (p = 0.21)."
        "\n\nQuestion: Does early mobilisation shorten hospital stay after hip surgery?"
        "\n\nAnswer with yes, no or maybe."
    )


def test_build_messages_is_the_format_system_prompt_then_the_user_message(pubmedqa_record):
    fmt = JsonFormat()
    assert build_messages(pubmedqa_record, fmt) == [
        {"role": "system", "content": fmt.system_prompt(("yes", "no", "maybe"))},
        {"role": "user", "content": render_user_message(pubmedqa_record)},
    ]


def test_tokenizer_without_chat_template_gets_the_plain_template():
    assert render_prompt(NoTemplateTokenizer(), MESSAGES) == (
        "System: Answer medical questions.\n\nUser: Question: Which nerve?\n\nAssistant:\n"
    )


def test_plain_template_ignores_chat_template_kwargs():
    plain = render_prompt(NoTemplateTokenizer(), MESSAGES)
    assert render_prompt(NoTemplateTokenizer(), MESSAGES, {"enable_thinking": False}) == plain


def test_qwen3_prompt_without_thinking_ends_with_an_empty_think_block(qwen3_tokenizer):
    prompt = render_prompt(qwen3_tokenizer, MESSAGES, {"enable_thinking": False})
    assert prompt.startswith("<|im_start|>system\nAnswer medical questions.<|im_end|>\n")
    assert "<|im_start|>user\nQuestion: Which nerve?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_qwen3_prompt_with_default_kwargs_ends_at_the_assistant_turn(qwen3_tokenizer):
    assert render_prompt(qwen3_tokenizer, MESSAGES).endswith("<|im_start|>assistant\n")


def test_real_tokenizer_with_chat_template_none_gets_the_plain_template(
    qwen3_tokenizer, monkeypatch
):
    monkeypatch.setattr(qwen3_tokenizer, "chat_template", None)
    plain = render_prompt(NoTemplateTokenizer(), MESSAGES)
    assert render_prompt(qwen3_tokenizer, MESSAGES, {"enable_thinking": False}) == plain


@pytest.mark.parametrize("fmt", [XmlFormat(), JsonFormat()], ids=["xml", "json"])
def test_full_qwen3_prompt_contains_the_format_instructions_and_options(
    qwen3_tokenizer, mcq_record, fmt
):
    prompt = render_prompt(
        qwen3_tokenizer, build_messages(mcq_record, fmt), {"enable_thinking": False}
    )
    assert fmt.system_prompt(mcq_record.labels) in prompt
    assert "D. Staphylococcus aureus" in prompt
