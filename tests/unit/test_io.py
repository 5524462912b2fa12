"""Files collab writes get the mode `open()` would give under the process umask, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from collab.io import atomic_write_json, atomic_write_text, current_umask
from collab.tasks.jsonl import write_tasks_jsonl
from collab.tasks.record import Task


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_the_process_umask_without_changing_it() -> None:
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(previous)


def test_atomic_writes_are_readable_by_others_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    atomic_write_text(tmp_path / "report.md", "# report\n")
    atomic_write_json(tmp_path / "results.json", {"a": 1})

    assert mode(tmp_path / "report.md") == 0o644
    assert mode(tmp_path / "results.json") == 0o644
    assert (tmp_path / "results.json").read_text() == '{\n  "a": 1\n}\n'


def test_atomic_writes_follow_a_stricter_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "DONE", "{}\n")
    finally:
        os.umask(previous)

    assert mode(tmp_path / "DONE") == 0o600


def test_exported_task_files_are_readable_by_others_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    out = write_tasks_jsonl(tmp_path / "tasks.jsonl", [Task(id="t1", kind="qa", goal="Which city?", answer="Lyon")])

    assert mode(out) == 0o644
