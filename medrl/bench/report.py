"""The benchmark's report: markdown tables (printed and written to report.md), the raw JSON,
and the scaling table / CSV / plot."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from medrl.bench.instrument import PHASES
from medrl.bench.stats import Summary, compute_floor_ms, decode_floor_ms, ratio

GIB = 1024**3
NAMES = {"medrl": "medrl", "trl": "TRL", "hf": "plain generate"}
PHASE_TITLES = {
    "prefill": "prefill (first forward of generate)",
    "decode": "decode (generate - prefill)",
    "reward": "reward scoring",
    "ref_logprobs": "reference pass (no-grad log-probs)",
    "policy_forward": "policy forward (log-probs with grad)",
    "policy_backward": "policy backward",
    "optimizer": "optimizer step",
    "other": "other (loss, advantages, clipping, framework)",
}


def fmt_seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def fmt_gib(value: float | None) -> str:
    return "n/a" if not value else f"{value / GIB:.2f} GiB"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_range(low: float, high: float, digits: int = 2) -> str:
    return f"{low:.{digits}f} - {high:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from index `right` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _get(summary: Summary | None, field: str) -> float | None:
    return None if summary is None else getattr(summary, field)


def step_rows(
    systems: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None
) -> list[list[str]]:
    """One row per system (median s/step, min-max, IQR, peak RSS, completion tokens/step) and
    one ratio row per other system against the first (`other / first`)."""
    labels = {**NAMES, **(labels or {})}
    rows = []
    for name, figures in systems.items():
        s = figures["seconds"]
        rows.append(
            [
                labels.get(name, name),
                str(0 if s is None else s.n),
                fmt_seconds(_get(s, "median")),
                "n/a" if s is None else fmt_range(s.min, s.max),
                "n/a" if s is None else fmt_range(s.q1, s.q3),
                fmt_gib(figures["peak_rss_bytes"]),
                _tokens_per_step(figures),
            ]
        )
    names = list(systems)
    for other in names[1:]:
        first, second = systems[names[0]], systems[other]
        rows.append(
            [
                f"{labels.get(other, other)} / {labels.get(names[0], names[0])}",
                "",
                fmt_ratio(
                    ratio(_get(second["seconds"], "median"), _get(first["seconds"], "median"))
                ),
                "",
                "",
                fmt_ratio(ratio(second["peak_rss_bytes"], first["peak_rss_bytes"])),
                "",
            ]
        )
    return rows


def _tokens_per_step(figures: Mapping[str, Any]) -> str:
    """Median completion tokens of a GRPO step, or the tokens an SFT step trains on."""
    completion = figures["counters"].get("completion_tokens")
    if completion is not None:
        return f"{completion.median:.0f}"
    trained = figures.get("trained_tokens_per_step")
    return "-" if trained is None else f"{trained} (trained)"


STEP_HEADER = [
    "system",
    "measured steps",
    "median s/step",
    "min - max",
    "IQR",
    "peak RSS",
    "tokens/step",
]


def step_table(
    systems: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None
) -> str:
    """The step rows, plus a peak CUDA memory column when the runs were on a GPU."""
    rows = step_rows(systems, labels)
    if not any(f.get("cuda_peak_allocated_bytes") for f in systems.values()):
        return markdown_table(STEP_HEADER, rows)
    names = list(systems)
    cuda = [fmt_gib(systems[n].get("cuda_peak_allocated_bytes")) for n in names]
    first = systems[names[0]].get("cuda_peak_allocated_bytes")
    cuda += [
        fmt_ratio(ratio(systems[n].get("cuda_peak_allocated_bytes"), first)) for n in names[1:]
    ]
    return markdown_table(
        [*STEP_HEADER, "peak CUDA memory"], [[*r, c] for r, c in zip(rows, cuda, strict=True)]
    )


def breakdown_table(systems: Mapping[str, Mapping[str, Any]]) -> str:
    """Median seconds of each phase and its share of the summed step time, per system."""
    names = [n for n, f in systems.items() if f["phases"]]
    header = ["phase"]
    for name in names:
        header += [f"{NAMES.get(name, name)} median s", f"{NAMES.get(name, name)} share"]
    rows = []
    for phase in PHASES:
        row = [PHASE_TITLES[phase]]
        for name in names:
            figures = systems[name]
            share = figures["phase_shares"].get(phase)
            row += [
                fmt_seconds(_get(figures["phases"].get(phase), "median")),
                "n/a" if share is None else f"{100 * share:.0f}%",
            ]
        rows.append(row)
    step = ["step (wall)"]
    for name in names:
        step += [fmt_seconds(_get(systems[name]["seconds"], "median")), "100%"]
    rows.append(step)
    return markdown_table(header, rows)


COMPUTE_FLOOR_NOTE = (
    "The compute floor: the forward's Linear products for every row of the step at the dense "
    "matrix product rate measured above; a forward can be held by either floor. medrl's rows "
    "leave the batch as they end, so its average forward has fewer rows than that."
)


def floor_table(
    systems: Mapping[str, Mapping[str, Any]],
    bandwidth: float | None,
    matmul_rate: float | None = None,
) -> str | None:
    """Per system: median ms per decode forward, the weights one forward reads, the memory
    floor (those bytes at the measured read bandwidth) and how many floors a forward takes;
    with `matmul_rate` (FLOP/s) also the compute floor (the products of all the step's rows at
    that rate) and the same ratio. None when no system timed its decode forwards."""
    names = [n for n, f in systems.items() if _get(f.get("decode_ms_per_forward"), "median")]
    if not names:
        return None
    rows = []
    for name in names:
        figures = systems[name]
        measured = _get(figures["decode_ms_per_forward"], "median")
        weights = figures.get("decode_weight_bytes")
        floor = decode_floor_ms(weights, bandwidth)
        row = [
            NAMES.get(name, name),
            f"{measured:.1f}",
            fmt_gib(weights),
            "n/a" if floor is None else f"{floor:.1f}",
            "n/a" if floor is None else f"{measured / floor:.2f}x",
        ]
        if matmul_rate:
            step_rows = _get(figures.get("counters", {}).get("rows"), "median")
            compute = compute_floor_ms(figures.get("decode_flops_per_row"), step_rows, matmul_rate)
            row += [
                "n/a" if compute is None else f"{compute:.1f} ({step_rows:.0f} rows)",
                "n/a" if compute is None else f"{measured / compute:.2f}x",
            ]
        rows.append(row)
    header = ["system", "ms per decode forward", "weights read", "floor ms", "forward / floor"]
    if matmul_rate:
        header += ["compute floor ms", "forward / compute floor"]
    return markdown_table(header, rows)


def rollout_table(systems: Mapping[str, Mapping[str, Any]]) -> str:
    """Tokens per second (non-pad completion tokens / generate wall time), per system, and
    medrl's throughput relative to each other system."""
    header = [
        "system",
        "calls",
        "median tokens/s",
        "min - max",
        "median s/call",
        "completion tokens/call",
        "peak RSS",
    ]
    rows = []
    for name, figures in systems.items():
        tps, tokens, s = (
            figures["tokens_per_second"],
            figures["counters"].get("completion_tokens"),
            figures["seconds"],
        )
        rows.append(
            [
                NAMES.get(name, name),
                str(0 if s is None else s.n),
                "n/a" if tps is None else f"{tps.median:.1f}",
                "n/a" if tps is None else fmt_range(tps.min, tps.max, 1),
                fmt_seconds(_get(s, "median")),
                "n/a" if tokens is None else f"{tokens.median:.0f}",
                fmt_gib(figures["peak_rss_bytes"]),
            ]
        )
    names = list(systems)
    for other in names[1:]:
        value = ratio(
            _get(systems[names[0]]["tokens_per_second"], "median"),
            _get(systems[other]["tokens_per_second"], "median"),
        )
        rows.append(
            [f"medrl / {NAMES.get(other, other)} (tokens/s)", "", fmt_ratio(value), "", "", "", ""]
        )
    return markdown_table(header, rows)


def header_lines(environment: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in environment["versions"].items())
    lines = [
        "# medrl.bench",
        "",
        f"- device: {environment['device']} ({environment['device_name']}), "
        f"{environment['threads']} threads per process",
    ]
    if "cpu" in environment:
        lines.append(
            f"- cpu: {environment['cpu']['description']}; kind `{environment['cpu']['slug']}`"
        )
    bandwidth = environment.get("read_bandwidth_bytes_per_s")
    if bandwidth:
        lines.append(
            f"- memory read bandwidth: {bandwidth / 1e9:.1f} GB/s ({environment['threads']} "
            "threads, best of 5 sums over 512 MiB)"
        )
    rate = environment.get("matmul_flops_per_s")
    if rate:
        lines.append(
            f"- dense matrix product rate: {rate / 1e9:.0f} GFLOP/s "
            f"({environment.get('matmul_dtype', 'float32')}, {environment['threads']} threads, "
            "best of 5 products of 1024 x 1024 matrices)"
        )
    lines.append(f"- versions: {versions}")
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    return lines


SECTION_TITLES = {
    "grpo": "GRPO step (one rollout step: generate, score, reference, update)",
    "sft": "SFT step (one optimizer step)",
    "rollout": "Rollout throughput (medrl.rollout.generate vs plain model.generate)",
}


def render_report(results: Mapping[str, Any]) -> str:
    """The whole report as markdown: header, then one section per benchmark that ran."""
    lines = header_lines(results["environment"], results["settings"])
    for note in results.get("notes", []):
        lines.append(f"- note: {note}")
    for kind, section in results.get("sections", {}).items():
        systems = {name: s["summary"] for name, s in section["systems"].items()}
        lines += ["", f"## {SECTION_TITLES[kind]}", ""]
        lines.append(rollout_table(systems) if kind == "rollout" else step_table(systems))
        if kind == "grpo" and any(f["phases"] for f in systems.values()):
            lines += ["", "Where the GRPO step's time goes (same instrumentation in both):", ""]
            lines.append(breakdown_table(systems))
        environment = results["environment"]
        floor = floor_table(
            systems,
            environment.get("read_bandwidth_bytes_per_s"),
            environment.get("matmul_flops_per_s"),
        )
        if floor:
            lines += ["", "Decode against the memory floor (weights read once per forward):", ""]
            lines.append(floor)
            if environment.get("matmul_flops_per_s"):
                lines += ["", COMPUTE_FLOOR_NOTE]
        for name, figures in systems.items():
            decisions = figures.get("engine_decisions") or []
            if decisions:
                lines += ["", f"{NAMES.get(name, name)}'s engine, chosen by measurement:", ""]
                lines += [f"- {line}" for line in decisions]
        for name, figures in systems.items():
            for error in figures["failed_runs"]:
                lines += ["", f"{NAMES.get(name, name)} run failed:", "", "```", error, "```"]
    if results.get("scaling"):
        lines += ["", "## Scaling (GRPO step over G x max_new_tokens)", ""]
        lines.append(scaling_markdown(results["scaling"]))
    return "\n".join(lines) + "\n"


def jsonable(value: Any) -> Any:
    """Summaries and other dataclasses as dicts, recursively."""
    if isinstance(value, Summary):
        return value.as_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(vars(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(jsonable(results), indent=1, default=str))


# --- scaling ---------------------------------------------------------------------------------

SCALING_COLUMNS = [
    "system",
    "G",
    "max_new_tokens",
    "steps",
    "median_s",
    "min_s",
    "max_s",
    "peak_rss_gib",
    "completion_tokens",
    "decode_width",
]


def scaling_rows(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per (system, G, max_new_tokens) point from its summary."""
    rows = []
    for point in points:
        figures = point["summary"]
        s = figures["seconds"]
        counters = figures["counters"]
        rows.append(
            {
                "system": point["system"],
                "G": point["G"],
                "max_new_tokens": point["max_new_tokens"],
                "steps": 0 if s is None else s.n,
                "median_s": _get(s, "median"),
                "min_s": _get(s, "min"),
                "max_s": _get(s, "max"),
                "peak_rss_gib": None
                if not figures["peak_rss_bytes"]
                else figures["peak_rss_bytes"] / GIB,
                "completion_tokens": _get(counters.get("completion_tokens"), "median"),
                "decode_width": _get(counters.get("decode_width"), "median"),
            }
        )
    return rows


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def scaling_markdown(points: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "system",
        "G",
        "max new tokens",
        "steps",
        "median s/step",
        "min - max",
        "peak RSS GiB",
        "completion tokens/step",
        "decode steps",
    ]
    rows = [
        [
            NAMES.get(r["system"], r["system"]),
            str(r["G"]),
            str(r["max_new_tokens"]),
            str(r["steps"]),
            _cell(r["median_s"]),
            "n/a" if r["min_s"] is None else fmt_range(r["min_s"], r["max_s"]),
            _cell(r["peak_rss_gib"]),
            _cell(r["completion_tokens"], 0),
            _cell(r["decode_width"], 0),
        ]
        for r in scaling_rows(points)
    ]
    return markdown_table(header, rows)


def write_scaling(folder: Path, points: Sequence[Mapping[str, Any]]) -> list[Path]:
    """scaling.md, scaling.csv and scaling.png (step time and peak RSS against G, one line per
    max_new_tokens, per system) in `folder`; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = scaling_rows(points)
    md, table, png = folder / "scaling.md", folder / "scaling.csv", folder / "scaling.png"
    md.write_text(scaling_markdown(points) + "\n")
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCALING_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot_scaling(rows, png)
    return [md, table, png]


def plot_scaling(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Two panels against G: median step seconds and peak RSS; a line per (system, tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines = sorted({(r["system"], r["max_new_tokens"]) for r in rows})
    for system, tokens in lines:
        points = sorted(
            (r for r in rows if (r["system"], r["max_new_tokens"]) == (system, tokens)),
            key=lambda r: r["G"],
        )
        style = "-o" if system == "medrl" else "--s"
        label = f"{NAMES.get(system, system)}, {tokens} tokens"
        g = [r["G"] for r in points]
        time_axis.plot(g, [r["median_s"] for r in points], style, label=label)
        memory_axis.plot(g, [r["peak_rss_gib"] for r in points], style, label=label)
    groups = sorted({r["G"] for r in rows})
    for axis, title in ((time_axis, "median step time (s)"), (memory_axis, "peak RSS (GiB)")):
        axis.set_xlabel("G (completions per prompt)")
        axis.set_title(title)
        axis.set_xscale("log", base=2)
        axis.set_xticks(groups, [str(g) for g in groups])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
    time_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
