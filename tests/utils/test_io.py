"""Atomic writes: a reader sees the old content or the whole new one, never a part."""

from __future__ import annotations

import pytest

from medrl.utils.io import atomic_directory, atomic_file, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.md"
    write_atomic(target, "old")
    write_atomic(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_a_file_written_in_pieces_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.gguf"
    with atomic_file(target) as handle:
        handle.write(b"GGUF")
        handle.write(b"-rest")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"GGUF-rest"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_a_crash_while_building_a_directory_keeps_the_previous_one(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_directory(target) as staging:
        (staging / "weights").write_text("good")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_replace_false_keeps_a_folder_someone_else_built_first(tmp_path):
    target = tmp_path / "cache"
    with atomic_directory(target) as staging:
        (staging / "first").write_text("1")
    with atomic_directory(target, replace=False) as staging:
        (staging / "second").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["first"]
    assert oct(target.stat().st_mode & 0o777) == "0o755"
