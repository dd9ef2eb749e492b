"""Several benchmarks in one evaluation (evaluation.benchmarks): the items each one scores,
checked against the output format before any weights load.

A benchmark is a dataset group (conf/dataset/<name>.yaml) whose eval pool every point of the
chain is scored on, with the run's format, prompts and evaluation mode. The closed formats
(letter, xml, tags, json) take each record's own labels (A-D for MedMCQA and MedQA, yes / no /
maybe for PubMedQA), so any labelled dataset suits them; a dataset without labels (BioASQ)
needs format=free_text, and free_text needs a reference answer in every record scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medrl.data import DatasetPools, DatasetSpec, MixtureSpec
from medrl.data.normalize import get_normalizer
from medrl.data.records import QARecord
from medrl.evaluation.settings import BENCHMARKS_KEY
from medrl.prompts import OutputFormat
from medrl.prompts.free_text import MissingReferenceError, reference_text


def dataset_labels(spec: DatasetSpec | MixtureSpec) -> tuple[str, ...]:
    """The answer labels a dataset's questions take (a mixture's sources share theirs); ()
    for an open-ended dataset (BioASQ)."""
    if isinstance(spec, MixtureSpec):
        spec = next(iter(spec.sources.values()))
    return tuple(get_normalizer(spec.name).labels)


def check_benchmark_format(
    specs: Mapping[str, DatasetSpec | MixtureSpec], output_format: OutputFormat
) -> None:
    """A closed format answers with a label, so every benchmark must have labels: raised
    before any data or weights load (references, for free_text, are checked on the records)."""
    if output_format.open_ended:
        return
    unlabelled = [name for name, spec in specs.items() if not dataset_labels(spec)]
    if unlabelled:
        raise ValueError(
            f"{BENCHMARKS_KEY} lists {unlabelled}, open-ended datasets without answer labels, "
            f"and format={output_format.name} answers with a label; remove them from "
            f"{BENCHMARKS_KEY} or evaluate them with format=free_text"
        )


def benchmark_records(
    pools: Mapping[str, DatasetPools], limit: int | None
) -> dict[str, list[QARecord]]:
    """Benchmark -> the first `limit` items (evaluation.limit; None: all) of its eval pool; a
    dataset without an eval pool, or an empty one, is an error naming the benchmark."""
    records = {}
    for name, dataset in pools.items():
        pool = dataset.eval_pool
        if pool is None or not dataset.get(pool):
            raise ValueError(
                f"{BENCHMARKS_KEY}: {name} has no items to score (its eval pool "
                f"{pool!r} is {'missing' if pool is None else 'empty'}); give it dataset "
                f"eval_pool and pools.{pool or 'eval'} (evaluation.benchmark_overrides.{name})"
            )
        records[name] = list(dataset[pool])[:limit]
    return records


def check_benchmark_records(
    output_format: OutputFormat, records: Mapping[str, Sequence[QARecord]]
) -> None:
    """The items each benchmark scores suit the format: labels for a closed format, a
    reference answer in every record for an open-ended one; raised before any weights load."""
    for name, items in records.items():
        if output_format.open_ended:
            try:
                for record in items:
                    reference_text(record)
            except MissingReferenceError as error:
                raise ValueError(
                    f"{BENCHMARKS_KEY}: format={output_format.name} scores answers against "
                    f"a reference, and {name}'s eval pool lacks one: {error}"
                ) from error
            continue
        open_ended = [record.id for record in items if record.open_ended]
        if open_ended:
            raise ValueError(
                f"{BENCHMARKS_KEY}: {name}'s eval pool holds {len(open_ended)} questions "
                f"without answer labels (first: {open_ended[0]!r}), and format="
                f"{output_format.name} answers with a label; use format=free_text or drop "
                f"{name} from {BENCHMARKS_KEY}"
            )
