"""Small file helpers shared by everything that writes results."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` to `path` atomically: readers see the old file or the whole new one."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path) as handle:
        handle.write(payload)
    return Path(path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary handle whose contents replace `path` atomically when the block ends.

    For files too large to hold in memory (write_atomic takes the whole payload): write in
    pieces. The temporary file sits beside the target so os.replace stays on one filesystem;
    an error inside the block leaves `path` as it was and no temporary behind; the result is
    mode 0644 (mkstemp creates 0600, and results are meant to be shared).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(folder: str | os.PathLike[str], replace: bool = True) -> Iterator[Path]:
    """Build a folder atomically: yield a staging folder beside `folder`, then rename it.

    A crash inside the block leaves `folder` as it was (the staging folder is removed). If
    `folder` exists at the end it is replaced, or, with replace=False, kept (someone else built
    it first) and the staging folder discarded. The result is mode 0755 (mkdtemp makes 0700).
    """
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if target.exists():
            if not replace:
                return
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_png(figure: Any, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Render a matplotlib Figure to PNG and write it atomically (readers never see half an
    image)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return write_atomic(path, buffer.getvalue())
