"""Markdown tables (exact text) and the PNG bar chart of evaluation results."""

from __future__ import annotations

import math

import pytest

from medrl.evaluation import (
    PairedResult,
    bar_chart,
    compute_metrics,
    metrics_table_markdown,
    paired_table_markdown,
    write_markdown_report,
)
from medrl.evaluation.power import mcnemar_mde
from medrl.evaluation.report import MDE_NOTE, mde_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(make_pred):
    """Two models on the same four items (gold A A B C: always "A" scores 0.5)."""
    base = [
        make_pred("q1", "A", "A", num_tokens=4),
        make_pred("q2", "B", "A", num_tokens=6),
        make_pred("q3", None, "B", num_tokens=8),
        make_pred("q4", "C", "C", num_tokens=2),
    ]
    sft = [make_pred(p.id, p.gold, p.gold, num_tokens=3) for p in base]
    return {
        "base": compute_metrics(base, labels="ABCD", n_boot=50),
        "sft": compute_metrics(sft, labels="ABCD", n_boot=50),
    }


def test_metrics_table_markdown_exact_text(results):
    # base: 2/4 right, 3/4 formatted; sft: 4/4 (Wilson low 4 / (4 + z^2) = 0.510).
    # Half-widths: (0.850 - 0.150) / 2 = 0.350 and (1 - 0.510) / 2 = 0.245.
    assert metrics_table_markdown(results) == (
        "| model | n | accuracy [95% CI] | accuracy ± (half-width) | format compliance [95% CI] "
        "| parse-fail rate | mean tokens |\n"
        "| --- | ---: | --- | ---: | --- | ---: | ---: |\n"
        "| base | 4 | 0.500 [0.150, 0.850] | 0.350 | 0.750 [0.301, 0.954] | 0.250 | 5.0 |\n"
        "| sft | 4 | 1.000 [0.510, 1.000] | 0.245 | 1.000 [0.510, 1.000] | 0.000 | 3.0 |\n"
        "\n"
        'Majority-class baseline: 0.500 (always "A").\n'
    )


def test_metrics_table_lists_baselines_per_model_when_items_differ(results, make_pred):
    other = compute_metrics([make_pred("x", "B", "B")], n_boot=10)
    table = metrics_table_markdown({**results, "other": other})
    assert table.endswith(
        'Majority-class baseline: base 0.500 (always "A"); sft 0.500 (always "A"); '
        'other 1.000 (always "B").\n'
    )
    with pytest.raises(ValueError):
        metrics_table_markdown({})


PAIR = PairedResult(
    n=12,
    acc_a=3 / 12,
    acc_b=11 / 12,
    diff=8 / 12,
    diff_low=4 / 12,
    diff_high=11 / 12,
    b=1,
    c=9,
    p_value=0.021484375,
)


def test_paired_table_markdown_exact_text():
    tiny = PairedResult(50, 0.1, 0.9, 0.8, 0.7, 0.9, 0, 40, 2 / 2**40)
    close = PairedResult(100, 0.26, 0.26, 0.0, -0.04, 0.04, 2, 2, 1.0)
    # Min. detectable diff k(n) sqrt((b + c) / n), k(n) = (z_a sqrt(n) + z_b sqrt(n + z_b^2 -
    # z_a^2)) / (n + z_b^2) (tests/evaluation/test_power.py): n = 12, psi = 10/12: k = (6.789514
    # + 0.841621 * 2.977729) / 12.708326 = 0.731460, * 0.912871 = 0.668; n = 50, psi = 0.8:
    # k = (13.859038 + 0.841621 * 6.845938) / 50.708326 = 0.386933, * 0.894427 = 0.346;
    # n = 100, b + c = 4: below n k^2 = 7.67, so nothing is detectable.
    table = paired_table_markdown({"base -> sft": PAIR, "base -> grpo": tiny, "sft -> grpo": close})
    assert table == (
        "| comparison | n | acc A | acc B | B - A [95% CI] | b: A right, B wrong "
        "| c: A wrong, B right | McNemar p | min. detectable diff (80% power) |\n"
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n"
        "| base -> sft | 12 | 0.250 | 0.917 | +0.667 [+0.333, +0.917] | 1 | 9 | 0.0215 "
        "| 0.668 |\n"
        "| base -> grpo | 50 | 0.100 | 0.900 | +0.800 [+0.700, +0.900] | 0 | 40 | < 0.0001 "
        "| 0.346 |\n"
        "| sft -> grpo | 100 | 0.260 | 0.260 | +0.000 [-0.040, +0.040] | 2 | 2 | 1.0000 "
        "| none (needs b + c >= 8) |\n"
        "\n" + MDE_NOTE + "\n"
    )
    assert (PAIR.discordance, PAIR.mde) == (10 / 12, pytest.approx(0.667729, abs=1e-6))
    assert math.isinf(close.mde)


def test_mde_text_says_when_nothing_is_detectable():
    assert mde_text(200, 20) == f"{mcnemar_mde(200, 0.1):.3f}"
    assert mde_text(200, 7) == "none (needs b + c >= 8)"
    assert mde_text(3, 3) == "none at n = 3"  # n <= z_a^2: no n items can show a difference


def test_write_markdown_report_holds_both_tables_and_no_temporary_file(results, tmp_path):
    path = write_markdown_report(tmp_path / "eval" / "report.md", results, {"base -> sft": PAIR})
    text = path.read_text()
    assert text.startswith("## Metrics\n\n" + metrics_table_markdown(results))
    assert text.endswith("## Paired comparisons\n\n" + paired_table_markdown({"base -> sft": PAIR}))
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_bar_chart_writes_a_png_atomically(results, tmp_path):
    path = bar_chart(results, tmp_path / "plots" / "accuracy.png")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["accuracy.png"]
    # Overwriting keeps a valid file; more metrics and an undefined one (nan) still plot.
    bar_chart(results, path, metrics=("accuracy", "format_rate", "macro_f1", "accuracy_on_schema"))
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_bar_chart_rejects_unknown_metrics_naming_the_valid_ones(results, tmp_path):
    with pytest.raises(ValueError, match="valid metrics: .*'accuracy'"):
        bar_chart(results, tmp_path / "x.png", metrics=("accuracy", "answer_histogram"))
    assert not (tmp_path / "x.png").exists()
