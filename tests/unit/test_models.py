"""Model names: the embedded default, the tiny test model, local paths, and the once-only cache build."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from collab.errors import CollabError
from collab.models import _build_once, resolve_model, tiny_model_dir


def _slow_build(target: str, log: str) -> None:
    def build(out: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the second process to arrive while the first one builds
        (out / "config.json").write_text("{}")
        (out / "weights.bin").write_bytes(b"x" * 1000)

    _build_once(Path(target), build)


def test_two_processes_building_the_same_model_build_it_once(tmp_path: Path) -> None:
    target, log = tmp_path / "models" / "m", tmp_path / "log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(str(target), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text() == "built\n"
    assert (target / "weights.bin").stat().st_size == 1000
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".m.")]  # no temporary leftovers


def test_a_failed_build_leaves_no_partial_model(tmp_path: Path) -> None:
    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _build_once(tmp_path / "m", broken)
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.lock"]


def test_tiny_model_is_a_loadable_directory() -> None:
    path = tiny_model_dir()
    assert (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()
    assert resolve_model("tiny-random-smollm2") == str(path)


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(CollabError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_model("smollm2-135m-instrct")


def test_directory_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_hub_ids_pass_through() -> None:
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
