"""evaluation.benchmarks and evaluation.benchmark_overrides: their one validation (the eval
stage raises it before any model loads, preflight reports it), keyed as the config spells it."""

from __future__ import annotations

from medrl.evaluation.settings import benchmark_names, benchmark_problems, evaluation_problems


def messages(values) -> list[str]:
    return [p.message("evaluation.") for p in benchmark_problems(values)]


def test_null_and_a_list_of_dataset_groups_are_valid():
    assert messages({"benchmarks": None}) == []
    assert messages({}) == [], "a block written before benchmarks existed"
    assert messages({"benchmarks": ["medmcqa", "medqa", "pubmedqa"]}) == []
    assert benchmark_names({"benchmarks": ["medqa", "pubmedqa"]}) == ["medqa", "pubmedqa"]
    assert benchmark_names({"benchmarks": None}) is None


def test_an_unknown_name_lists_the_dataset_groups():
    (message,) = messages({"benchmarks": ["medmcqa", "usmle"]})
    assert message.startswith(
        "evaluation.benchmarks=['medmcqa', 'usmle']: names ['usmle'], which are not dataset "
        "groups; choose from ['bioasq', 'medmcqa', 'medmcqa_medqa', 'medqa', 'pubmedqa']"
    )


def test_an_empty_list_a_string_and_a_repeated_name_are_refused():
    assert (
        "must be null (the run's own dataset) or a non-empty list"
        in messages({"benchmarks": []})[0]
    )
    assert "non-empty list" in messages({"benchmarks": "medqa"})[0]
    assert messages({"benchmarks": ["medqa", "medqa"]}) == [
        "evaluation.benchmarks=['medqa', 'medqa']: lists ['medqa'] more than once"
    ]


def test_overrides_must_name_listed_benchmarks_and_be_blocks():
    values = {"benchmarks": ["medqa"], "benchmark_overrides": {"pubmedqa": {"source": "hub"}}}
    (message,) = messages(values)
    assert "names ['pubmedqa'], which evaluation.benchmarks=['medqa'] does not list" in message
    values = {"benchmarks": ["medqa"], "benchmark_overrides": {"medqa": "hub"}}
    assert (
        "['medqa'] must each be a block of dataset keys (e.g. {source: hub})" in messages(values)[0]
    )


def test_the_evaluation_block_reports_benchmark_problems_with_its_others():
    keys = [p.key for p in evaluation_problems({"benchmarks": ["nope"], "batch_size": 0})]
    assert {"batch_size", "benchmarks"} <= set(keys)
