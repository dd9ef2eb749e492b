"""Summaries, ratios and the report's tables from given timings, checked by hand."""

from __future__ import annotations

import csv
import json

import pytest

from medrl.bench.report import (
    GIB,
    breakdown_table,
    jsonable,
    render_report,
    rollout_table,
    step_rows,
    write_scaling,
)
from medrl.bench.stats import Summary, ratio, summarize, system_summary


def step(seconds, measured=True, **phases):
    return {
        "seconds": seconds,
        "measured": measured,
        "phases": phases,
        "counters": {"completion_tokens": 2 * seconds},
        "reported": {},
    }


def run(steps, peak_gib):
    return {"steps": steps, "peak_rss_bytes": int(peak_gib * GIB), "rss_after_load_bytes": 0}


def test_summary_median_range_and_inclusive_quartiles():
    assert summarize([10, 1, 3, 2, 4]) == Summary(n=5, median=3, min=1, max=10, q1=2, q3=4)
    assert summarize([5.0]) == Summary(n=1, median=5.0, min=5.0, max=5.0, q1=5.0, q3=5.0)
    assert summarize([]) is None
    assert ratio(36.0, 12.0) == 3.0 and ratio(1.0, 0.0) is None and ratio(None, 2.0) is None


def test_a_system_summary_pools_measured_steps_of_every_run_and_keeps_the_highest_peak():
    runs = [
        run([step(100, measured=False), step(10, prefill=1.0), step(12, prefill=3.0)], 2.0),
        run([step(100, measured=False), step(14, prefill=2.0)], 3.0),
        {"failed": True, "error": "boom", "steps": []},
    ]
    figures = system_summary(runs)
    assert figures["step_seconds"] == [10, 12, 14]  # warm-up steps left out
    assert figures["seconds"].median == 12 and figures["phases"]["prefill"].median == 2.0
    assert figures["phase_shares"]["prefill"] == pytest.approx(6.0 / 36.0)
    assert figures["tokens_per_second"].median == 2.0  # 2 * seconds tokens per step
    assert figures["peak_rss_bytes"] == 3 * GIB and figures["failed_runs"] == ["boom"]


def figures(times, peak_gib, **phase_medians):
    summary = system_summary([run([step(t, **phase_medians) for t in times], peak_gib)])
    return summary


def test_the_step_table_gives_median_spread_memory_and_the_ratio_row():
    systems = {"medrl": figures([30, 33, 36], 3.0), "trl": figures([35, 36, 40], 6.0)}
    rows = step_rows(systems)
    assert rows[0] == ["medrl", "3", "33.00", "30.00 - 36.00", "31.50 - 34.50", "3.00 GiB", "66"]
    assert rows[1][:6] == ["TRL", "3", "36.00", "35.00 - 40.00", "35.50 - 38.00", "6.00 GiB"]
    assert rows[2][0] == "TRL / medrl"
    assert rows[2][2] == "1.09x"  # 36 / 33
    assert rows[2][5] == "2.00x"  # 6 GiB / 3 GiB


def test_the_breakdown_lists_every_phase_with_its_share():
    systems = {"medrl": figures([10, 10], 1.0, prefill=1.0, decode=4.0, other=5.0)}
    table = breakdown_table(systems)
    assert "| prefill (first forward of generate) | 1.00 | 10% |" in table
    assert "| decode (generate - prefill) | 4.00 | 40% |" in table
    assert "| step (wall) | 10.00 | 100% |" in table


def test_the_rollout_table_compares_tokens_per_second():
    systems = {"medrl": figures([2.0, 2.0], 1.0), "hf": figures([4.0, 4.0], 1.0)}
    table = rollout_table(systems)
    # 2 tokens per second of step in both (counters hold 2 * seconds), so the ratio is 1.
    assert "| medrl / plain generate (tokens/s) |  | 1.00x |" in table


def test_the_report_has_a_header_and_one_section_per_benchmark():
    results = {
        "environment": {"device": "cpu", "device_name": "Test CPU", "threads": 2, "versions": {}},
        "settings": {"model": "m"},
        "notes": ["TRL skipped: trl=false"],
        "sections": {"grpo": {"systems": {"medrl": {"summary": figures([1.0], 1.0)}}}},
    }
    text = render_report(results)
    assert "device: cpu (Test CPU), 2 threads" in text and "TRL skipped" in text
    assert "## GRPO step" in text and "| medrl | 1 | 1.00 |" in text
    json.dumps(jsonable(results))  # every Summary becomes plain data


def test_the_scaling_writer_makes_a_table_a_csv_and_a_plot(tmp_path):
    points = [
        {"system": "medrl", "G": g, "max_new_tokens": t, "summary": figures([g * t / 8], g / 4)}
        for g in (2, 4)
        for t in (32, 64)
    ]
    md, table, png = write_scaling(tmp_path, points)
    assert png.stat().st_size > 0
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["G"], r["max_new_tokens"], float(r["median_s"])) for r in rows] == [
        ("2", "32", 8.0),
        ("2", "64", 16.0),
        ("4", "32", 16.0),
        ("4", "64", 32.0),
    ]
    assert float(rows[0]["peak_rss_gib"]) == 0.5
    assert "| medrl | 4 | 64 | 1 | 32.00 |" in md.read_text()
