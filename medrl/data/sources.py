"""Raw rows in, normalized records out: local files or the Hugging Face Hub.

This module is the data layer's I/O edge:
- ``resolve_source`` decides where a spec's splits come from (``auto`` = local when every local
  file the pools need exists, else the hub) and which underlying split serves each requested one
  (``local.split_aliases``), with a note for every alias used;
- ``read_local_rows`` / ``read_hub_rows`` read one split as ``RawRow``s. Local files are read
  with plain Python (gzip + json) so a malformed line is reported with its file and line number;
- ``load_split`` runs the dataset's split check, normalizes every row and applies
  ``dataset.on_bad_row`` (error: DataError naming the row; skip: count it by kind).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from medrl.data.errors import DataError
from medrl.data.normalize import BadRow, Normalizer, RowContext, get_normalizer
from medrl.data.records import QARecord
from medrl.data.spec import DatasetSpec, HubSpec

log = logging.getLogger(__name__)

MALFORMED = "malformed row"
DUPLICATE_ID = "duplicate id"
LOCAL_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


@dataclass(frozen=True)
class RawRow:
    """One row as read, before normalization.

    index: 0-based position among the split's rows (blank lines are not rows), so fallback ids
    stay the same whether or not other rows are skipped. where: the row's location for messages
    (``<file>, line 12`` or ``hub <id> split 'train' row 12``). Exactly one of ``data`` (the
    parsed JSON object) and ``problem`` (why it could not be parsed) is set.
    """

    index: int
    where: str
    data: Mapping[str, Any] | None = None
    problem: BadRow | None = None


@dataclass(frozen=True)
class SourcePlan:
    """Where a spec's data comes from.

    source: ``local`` | ``hub``; location: the local folder or the hub id; splits: requested
    split -> underlying split actually read (differs only through ``local.split_aliases``);
    notes: human-readable remarks for the summary (aliases used, why ``auto`` chose the hub).
    """

    source: str
    location: str
    splits: Mapping[str, str]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedSplit:
    """One underlying split, normalized.

    records[i] is the record of raw row i, or None when that row was skipped (on_bad_row=skip);
    skipped counts the skipped rows by BadRow kind.
    """

    split: str
    location: str
    records: list[QARecord | None]
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows read from the source, skipped ones included."""
        return len(self.records)

    @property
    def valid(self) -> list[QARecord]:
        """The records that were not skipped, in source order."""
        return [record for record in self.records if record is not None]


# ---------------------------------------------------------------------------------------------
# source resolution


def resolve_source(spec: DatasetSpec) -> SourcePlan:
    """Pick local or hub for ``spec`` and map each pool split to the split that is read.

    local: every pool split must have a local file (itself or through an alias) that exists,
    else DataError listing what is missing. hub: ``spec.hub`` must be set. auto: local when
    local would work, else hub (the reason is kept as a note), else DataError with both reasons.
    """
    wanted = list(dict.fromkeys(pool.split for pool in spec.pools.values()))
    local_problems = _local_problems(spec, wanted)
    if spec.source == "local" or (spec.source == "auto" and not local_problems):
        if local_problems:
            raise DataError(_local_unavailable_message(spec, local_problems))
        return _local_plan(spec, wanted)
    if spec.hub is None:
        if spec.source == "hub":
            raise DataError(f"dataset.source=hub but dataset.hub is not set for {spec.name}")
        raise DataError(
            _local_unavailable_message(spec, local_problems) + " (and dataset.hub is not set)"
        )
    notes: tuple[str, ...] = ()
    if spec.source == "auto":
        notes = (f"local files unavailable ({'; '.join(local_problems)}); reading the hub",)
    return SourcePlan("hub", spec.hub.id, {split: split for split in wanted}, notes)


def _local_problems(spec: DatasetSpec, splits: Sequence[str]) -> list[str]:
    """Why the local copy cannot serve ``splits``; empty when it can."""
    if spec.local is None:
        return ["dataset.local is not set"]
    problems = []
    for split in splits:
        target = spec.local.resolve_split(split)
        if target is None:
            problems.append(
                f"split {split!r} has no local file (local.splits: {sorted(spec.local.splits)}, "
                f"local.split_aliases: {dict(spec.local.split_aliases)})"
            )
        elif not spec.local.path(target).is_file():
            problems.append(_not_a_file(spec.local.path(target)))
    # Splits aliased to one file share its problem; say it once.
    return list(dict.fromkeys(problems))


def _not_a_file(path: Path) -> str:
    # A folder where a split file belongs is a wrong dataset.local.splits entry, not a missing
    # download: say which, so the fix is obvious.
    return f"{path} is a directory, not a data file" if path.is_dir() else f"{path} does not exist"


def _local_unavailable_message(spec: DatasetSpec, problems: Sequence[str]) -> str:
    return (
        f"{spec.title}: cannot read local files: {'; '.join(problems)}. Set MEDRL_DATA_DIR to "
        f"the folder that holds {spec.name}/<split file>, set dataset.local.dir, or use "
        f"dataset.source=hub"
    )


def _local_plan(spec: DatasetSpec, splits: Sequence[str]) -> SourcePlan:
    assert spec.local is not None  # _local_problems returned none
    mapping = {split: spec.local.resolve_split(split) or split for split in splits}
    notes = []
    for split, target in mapping.items():
        if split != target:
            pools = [name for name, pool in spec.pools.items() if pool.split == split]
            notes.append(
                f"{spec.title} {split} split is not available locally; pools are cut from "
                f"{target} (pools: {', '.join(pools)})"
            )
    # resolve() only for display: ``<repo>/../shared/data`` reads better as ``/.../shared/data``.
    return SourcePlan("local", str(spec.local.dir.resolve()), mapping, tuple(notes))


# ---------------------------------------------------------------------------------------------
# readers


def read_local_rows(path: Path, id_field: str = "id") -> list[RawRow]:
    """Rows of a local split file: ``.jsonl`` / ``.jsonl.gz`` (one JSON object per line) or
    ``.json`` / ``.json.gz`` (a list of objects, or a dict of objects keyed by id; the key fills
    ``id_field`` when the object lacks it).

    A line that is not a JSON object becomes a RawRow with a ``problem`` (the caller decides
    whether it is fatal); an unreadable file, or a ``.json`` file that does not parse, raises
    DataError naming the file.
    """
    if not path.is_file():
        raise DataError(f"data file {_not_a_file(path)}")
    name = path.name
    if not name.endswith(LOCAL_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; expected one of {list(LOCAL_SUFFIXES)}")
    try:
        with _open_binary(path) as handle:
            if name.endswith((".jsonl", ".jsonl.gz")):
                return list(_jsonl_rows(handle, path))
            return _json_rows(handle.read(), path, id_field)
    except (OSError, EOFError) as error:  # corrupt or truncated gzip, unreadable file
        raise DataError(f"{path}: cannot read: {error}") from error


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _jsonl_rows(lines: Iterable[bytes], path: Path) -> Iterable[RawRow]:
    index = 0
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # a trailing newline or blank line is not a row
        where = f"{path}, line {line_number}"
        yield _parse_row(index, where, line)
        index += 1


def _parse_row(index: int, where: str, line: bytes) -> RawRow:
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return RawRow(index, where, problem=BadRow(MALFORMED, f"not valid JSON ({error})"))
    if not isinstance(data, dict):
        detail = f"a JSON {type(data).__name__}, not an object"
        return RawRow(index, where, problem=BadRow(MALFORMED, detail))
    return RawRow(index, where, data=data)


def _json_rows(content: bytes, path: Path, id_field: str) -> list[RawRow]:
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        # The whole file is one JSON value, so no row can be skipped: always an error.
        raise DataError(f"{path}: not valid JSON ({error})") from error
    if isinstance(data, list):
        items = [(f"{path}, item {i + 1}", value) for i, value in enumerate(data)]
    elif isinstance(data, dict):
        items = [
            (f"{path}, key {key!r}", {id_field: key, **value} if isinstance(value, dict) else value)
            for key, value in data.items()
        ]
    else:
        kind = type(data).__name__
        raise DataError(f"{path}: expected a JSON list or object of rows, got {kind}")
    rows = []
    for index, (where, value) in enumerate(items):
        if isinstance(value, dict):
            rows.append(RawRow(index, where, data=value))
        else:
            detail = f"a JSON {type(value).__name__}, not an object"
            rows.append(RawRow(index, where, problem=BadRow(MALFORMED, detail)))
    return rows


def read_hub_rows(hub: HubSpec, split: str) -> list[RawRow]:
    """Rows of ``split`` from ``datasets.load_dataset(hub.path, hub.name, split=, revision=)``.

    ``datasets`` is imported here, not at module import, so local-only use never pays for it.
    Any failure to load (no network, unknown split, missing package) raises DataError saying how
    to use local files instead.
    """
    try:
        import datasets
        from datasets.exceptions import DatasetsError
    except ImportError as error:
        raise DataError(_hub_failure(hub, split, error)) from error
    try:
        table = datasets.load_dataset(hub.path, hub.name, split=split, revision=hub.revision)
    except (OSError, ValueError, DatasetsError) as error:  # ConnectionError is an OSError
        raise DataError(_hub_failure(hub, split, error)) from error
    return [
        RawRow(index, f"hub {hub.id} split {split!r} row {index}", data=dict(row))
        for index, row in enumerate(table)
    ]


def _hub_failure(hub: HubSpec, split: str, error: BaseException) -> str:
    return (
        f"cannot load split {split!r} of {hub.id} from the Hugging Face Hub "
        f"({type(error).__name__}: {error}). Without network access, use the local files: "
        f"dataset.source=local (or MEDRL_DATA_SOURCE=local) with MEDRL_DATA_DIR pointing at the "
        f"folder that holds <dataset>/<split file> (see ../shared/data)"
    )


def read_ids_file(path: Path) -> list[str]:
    """Record ids from a JSON file: a list of ids, or an object whose keys are ids (such as
    PubMedQA's ``test_ground_truth.json``, PMID -> label). Ids are returned as strings, in file
    order; a missing or malformed file, or a repeated id, raises DataError."""
    if not path.is_file():
        raise DataError(f"ids file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"ids file {path}: cannot read JSON ({error})") from error
    if not isinstance(data, (list, dict)):
        kind = type(data).__name__
        raise DataError(f"ids file {path}: expected a JSON list or object, got {kind}")
    ids = [str(item) for item in data]
    repeated = sorted(key for key, count in Counter(ids).items() if count > 1)
    if repeated:
        raise DataError(f"ids file {path}: ids listed more than once: {repeated[:5]}")
    return ids


# ---------------------------------------------------------------------------------------------
# normalization of one split


def load_split(spec: DatasetSpec, plan: SourcePlan, split: str) -> LoadedSplit:
    """Read underlying ``split`` from ``plan.source`` and normalize every row.

    The dataset's split check runs first (its finding is always an error: it means a config
    key is wrong, not a row). A bad row, a malformed line or an id seen earlier in the split
    raises DataError naming the row, or with ``on_bad_row=skip`` is skipped and counted by kind.
    """
    normalizer = get_normalizer(spec.name)
    if plan.source == "local":
        assert spec.local is not None  # resolve_source chose local
        location = str(spec.local.path(split).resolve())
        rows = read_local_rows(spec.local.path(split), normalizer.id_field)
    else:
        assert spec.hub is not None  # resolve_source chose hub
        location = f"hub {spec.hub.id} split {split!r}"
        rows = _read_hub_split(spec.hub, split, plan)
    if not rows:
        raise DataError(_no_rows_message(location, plan, split))
    _check_split(normalizer, rows, spec.answer_index_base, location)
    records: list[QARecord | None] = []
    skipped: Counter[str] = Counter()
    first_row_of_id: dict[str, str] = {}
    for row in rows:
        try:
            record = _normalize(normalizer, spec, split, row, first_row_of_id)
        except BadRow as bad:
            if spec.on_bad_row == "error":
                raise DataError(
                    f"{row.where}: {bad.kind}: {bad.detail}. Fix the row, or set "
                    f"dataset.on_bad_row=skip to skip and count such rows"
                ) from bad
            skipped[bad.kind] += 1
            record = None
        records.append(record)
    if skipped:
        log.warning("%s: skipped %d bad rows: %s", location, sum(skipped.values()), dict(skipped))
    return LoadedSplit(split, location, records, dict(skipped))


def _read_hub_split(hub: HubSpec, split: str, plan: SourcePlan) -> list[RawRow]:
    """read_hub_rows; when ``auto`` chose the hub because local files were missing, the error
    also says why, since fixing the local path is then the usual way out."""
    try:
        return read_hub_rows(hub, split)
    except DataError as error:
        if not plan.notes:
            raise
        raise DataError(f"{error}. Why not local: {'; '.join(plan.notes)}") from error


def _no_rows_message(location: str, plan: SourcePlan, split: str) -> str:
    # Without this, an empty file surfaces later as a puzzling "pool takes ... 0 rows".
    if plan.source == "local":
        return (
            f"{location}: no rows (the file is empty or holds only blank lines); restore the "
            f"file or point dataset.local.splits.{split} at a file with rows"
        )
    return f"{location}: no rows"


def _check_split(
    normalizer: Normalizer, rows: Sequence[RawRow], answer_index_base: int, location: str
) -> None:
    if normalizer.check_split is None:
        return
    parsed = [row.data for row in rows if row.data is not None]
    problem = normalizer.check_split(parsed, answer_index_base)
    if problem is not None:
        raise DataError(f"{location}: {problem}")


def _normalize(
    normalizer: Normalizer,
    spec: DatasetSpec,
    split: str,
    row: RawRow,
    first_row_of_id: dict[str, str],
) -> QARecord:
    """One row -> record; raises BadRow (malformed line, normalizer failure, repeated id)."""
    if row.problem is not None:
        raise row.problem
    assert row.data is not None
    ctx = RowContext(spec.name, split, row.index, spec.answer_index_base)
    record = normalizer.normalize_row(row.data, ctx)
    # Ids select ids_file pools and check pool overlap, so two rows must never share one.
    if record.id in first_row_of_id:
        raise BadRow(DUPLICATE_ID, f"id {record.id!r} is also at {first_row_of_id[record.id]}")
    first_row_of_id[record.id] = row.where
    return record
