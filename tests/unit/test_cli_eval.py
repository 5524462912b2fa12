"""`collab eval` as a command: W&B mode from WANDB_MODE, and no empty --out folder left behind by a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from collab.cli import main


def eval_argv(out: Path, model: str = "tiny-random-smollm2") -> list[str]:
    return ["eval", "--model", model, "--tasks", "clarify-math", "--limit", "1", "--max-turns", "1",
            "--max-new-tokens", "8", "--resamples", "10", "--out", str(out)]


def test_eval_logs_offline_to_wandb_when_wandb_mode_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "eval"

    assert main(eval_argv(out)) == 0

    assert list((out / "wandb").glob("offline-run-*"))


def test_a_failed_eval_removes_the_out_folder_it_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"

    assert main(eval_argv(out, model="smollm2-135m-instrct")) == 2

    assert "unknown model" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_eval_keeps_an_out_folder_that_existed(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    assert main(eval_argv(out, model="smollm2-135m-instrct")) == 2

    assert (out / "notes.txt").read_text() == "mine"
