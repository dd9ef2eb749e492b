"""Rich tables for a ``DataSummary``: what ``python -m medrl.data`` prints.

Rendering only; every number comes from the summary, so what is printed is what was checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

from medrl.data.summary import DataSummary


def print_summary(summary: DataSummary, console: Console | None = None) -> None:
    """Print source, splits, pools, notes and the pool overlap matrices."""
    console = console or Console()
    console.print(_source_table(summary))
    console.print(_splits_table(summary))
    console.print(_pools_table(summary))
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    skipped = summary.skipped
    skipped_text = ", ".join(f"{kind} {n:,}" for kind, n in skipped.items()) if skipped else "0"
    console.print(f"bad rows skipped: {skipped_text}")
    console.print(f"duplicates removed: {summary.dedup_removed:,}")
    console.print(_overlap_table(summary))
    if summary.max_overlap:
        console.print("[bold red]pools overlap: every entry of the matrices must be 0[/]")
    else:
        console.print("[green]pools are disjoint by id and by question text[/]")


def _source_table(summary: DataSummary) -> Table:
    table = Table(title=f"{summary.title}: source", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("source", f"{summary.source} (dataset.source={summary.requested_source})")
    table.add_row("location", summary.location)
    table.add_row("seed", str(summary.seed))
    table.add_row("eval pool", summary.eval_pool or "none")
    return table


def _splits_table(summary: DataSummary) -> Table:
    table = Table(title=f"{summary.title}: source splits")
    table.add_column("split")
    table.add_column("rows", justify="right", no_wrap=True)
    table.add_column("skipped", justify="right", no_wrap=True)
    _add_label_columns(table, summary.labels)
    for split in summary.splits:
        skipped = sum(split.skipped.values())
        table.add_row(split.split, f"{split.rows:,}", f"{skipped:,}", *_label_cells(split.labels))
    return table


def _pools_table(summary: DataSummary) -> Table:
    table = Table(title=f"{summary.title}: pools (seed {summary.seed})")
    table.add_column("pool")
    table.add_column("split")
    table.add_column("selection")
    table.add_column("drawn", justify="right", no_wrap=True)
    table.add_column("dedup", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    _add_label_columns(table, summary.labels)
    mixed = any(pool.sources for pool in summary.pools)  # a mixture: final size per source
    if mixed:
        table.add_column("by source")
    for pool in summary.pools:
        split = pool.split
        if pool.source_split != pool.split:
            split = f"{pool.split}→{pool.source_split}"
        by_source = [", ".join(f"{name} {n:,}" for name, n in pool.sources.items())]
        table.add_row(
            pool.name,
            split,
            pool.selection,
            f"{pool.drawn:,}",
            f"-{pool.dedup_removed:,}" if pool.dedup_removed else "0",
            f"{pool.size:,}",
            *_label_cells(pool.labels),
            *(by_source if mixed else []),
        )
    return table


def _add_label_columns(table: Table, labels: Sequence[str]) -> None:
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)


def _label_cells(counts: Mapping[str, int]) -> list[str]:
    return [f"{n:,}" for n in counts.values()]


def _overlap_table(summary: DataSummary) -> Table:
    """Pool x pool matrix; each cell is ``shared ids / shared question texts``."""
    names = [pool.name for pool in summary.pools]
    title = "pool overlap: shared ids / question texts"
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("")
    for name in names:
        table.add_column(name, justify="center", no_wrap=True)
    for row in names:
        cells = [_overlap_cell(summary, row, column) for column in names]
        table.add_row(row, *cells)
    return table


def _overlap_cell(summary: DataSummary, a: str, b: str) -> str:
    if a == b:
        return "–"
    pair = (a, b) if (a, b) in summary.overlap_by_id else (b, a)
    by_id, by_text = summary.overlap_by_id[pair], summary.overlap_by_text[pair]
    text = f"{by_id:,} / {by_text:,}"
    return f"[bold red]{text}[/]" if by_id or by_text else text
