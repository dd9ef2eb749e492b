"""The report of several benchmarks in one evaluation (evaluation.benchmarks): models side by
side with each benchmark's own majority baseline, then one section per benchmark."""

from __future__ import annotations

import pytest

from medrl.evaluation import compute_metrics, paired_comparison
from medrl.evaluation.report import (
    BenchmarkResult,
    benchmark_chart,
    benchmark_table_markdown,
    demoted,
    write_benchmark_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def benchmarks(make_pred):
    """Two benchmarks, two models: MedQA-like (gold A A B C: always "A" scores 0.5; base 2/4
    right, sft 4/4) and PubMedQA-like (gold yes yes no maybe: always "yes" scores 0.5; base
    1/4, sft 3/4)."""
    mcq_base = [
        make_pred("q1", "A", "A"),
        make_pred("q2", "B", "A"),
        make_pred("q3", None, "B"),
        make_pred("q4", "C", "C"),
    ]
    mcq_sft = [make_pred(p.id, p.gold, p.gold) for p in mcq_base]
    yes_no = ("yes", "no", "maybe")
    pub_base = [
        make_pred("p1", "yes", "yes"),
        make_pred("p2", "no", "yes"),
        make_pred("p3", "yes", "no"),
        make_pred("p4", "no", "maybe"),
    ]
    pub_sft = [
        make_pred("p1", "yes", "yes"),
        make_pred("p2", "yes", "yes"),
        make_pred("p3", "no", "no"),
        make_pred("p4", "no", "maybe"),
    ]

    def result(title, labels, base, sft):
        results = {
            "base": compute_metrics(base, labels=labels, n_boot=50),
            "sft": compute_metrics(sft, labels=labels, n_boot=50),
        }
        return BenchmarkResult(title, results, {"base -> sft": paired_comparison(base, sft)})

    return {
        "medqa": result("MedQA", "ABCD", mcq_base, mcq_sft),
        "pubmedqa": result("PubMedQA", yes_no, pub_base, pub_sft),
    }


def test_side_by_side_table_has_one_column_per_benchmark_and_each_ones_own_baseline(benchmarks):
    # Wilson 95% intervals at n = 4: 1/4 [0.046, 0.699], 2/4 [0.150, 0.850], 3/4 [0.301,
    # 0.954], 4/4 [0.510, 1.000].
    assert benchmark_table_markdown(benchmarks) == (
        "| model | MedQA accuracy [95% CI] | PubMedQA accuracy [95% CI] |\n"
        "| --- | --- | --- |\n"
        "| base | 0.500 [0.150, 0.850] | 0.250 [0.046, 0.699] |\n"
        "| sft | 1.000 [0.510, 1.000] | 0.750 [0.301, 0.954] |\n"
        "| n (items) | 4 | 4 |\n"
        '| majority baseline | 0.500 ("A") | 0.500 ("yes") |\n'
    )


def test_report_has_the_table_then_one_section_per_benchmark_with_its_tests(benchmarks, tmp_path):
    path = write_benchmark_report(tmp_path / "report.md", benchmarks, {"sft": "step 2 of 2"})
    text = path.read_text()

    assert text.startswith("## Benchmarks\n\n" + benchmark_table_markdown(benchmarks))
    medqa, pubmedqa = text.index("## MedQA (`medqa`)"), text.index("## PubMedQA (`pubmedqa`)")
    checkpoints = text.index("## Checkpoints\n\n- sft: step 2 of 2")
    assert medqa < pubmedqa < checkpoints
    sections = {"medqa": text[medqa:pubmedqa], "pubmedqa": text[pubmedqa:checkpoints]}
    assert 'Majority-class baseline: 0.500 (always "A").' in sections["medqa"]
    assert 'Majority-class baseline: 0.500 (always "yes").' in sections["pubmedqa"]
    for section in sections.values():
        assert "### Metrics" in section and "### Paired comparisons" in section
        assert "| base -> sft | 4 |" in section
        assert "min. detectable diff (80% power)" in section


def test_demoted_moves_every_heading_one_level_down():
    assert (
        demoted("## Metrics\n\ntext #1\n### Sampling\n")
        == "### Metrics\n\ntext #1\n#### Sampling\n"
    )


def test_open_ended_benchmarks_show_token_f1_and_no_majority_baseline(make_pred):
    preds = [make_pred("p1", "yes", "yes")]
    results = {"base": {"n": 1, "token_f1": compute_metrics(preds, n_boot=10)["accuracy"]}}
    table = benchmark_table_markdown({"pubmedqa": BenchmarkResult("PubMedQA", results, {})})
    assert table.startswith("| model | PubMedQA token F1 [95% CI] |")
    assert "majority baseline" not in table


def test_chart_is_a_png_with_a_group_per_benchmark(benchmarks, tmp_path):
    path = benchmark_chart(benchmarks, tmp_path / "comparison.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="no benchmarks"):
        benchmark_chart({}, tmp_path / "empty.png")
