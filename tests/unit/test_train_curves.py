"""A trainer stage's logged steps, read back from metrics.jsonl and plotted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from collab.errors import CollabError
from collab.train.callbacks import MetricsLogCallback
from collab.train.curves import main, plot_curves, read_metrics, series


def test_the_callback_appends_one_finite_entry_per_log_of_the_main_process(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    callback, args = MetricsLogCallback(path), TrainingArguments(output_dir=str(tmp_path), report_to="none")
    for step, logs in ((1, {"loss": 0.5, "mr/mean": 0.25, "note": "text"}), (2, {"loss": float("nan")})):
        callback.on_log(args, TrainerState(global_step=step), TrainerControl(), logs=logs)
    callback.on_log(args, TrainerState(global_step=3, is_world_process_zero=False), TrainerControl(), logs={"loss": 1})

    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, "loss": 0.5, "mr/mean": 0.25}, {"step": 2, "loss": None}]
    path.write_text(path.read_text() + '{"step": 3, "lo')  # a crash cut the last line short
    callback.on_log(args, TrainerState(global_step=3), TrainerControl(), logs={"loss": 0.25})
    assert series(read_metrics(path), "loss") == ([1, 3], [0.5, 0.25])  # the next launch's entry is whole


def test_a_resumed_stages_second_log_of_a_step_replaces_the_first_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "mr/mean": 0.1}, {"step": 2, "mr/mean": 0.2, "mr/task": 1.0}, {"step": 2, "mr/mean": 0.3},
             {"step": 3, "loss": 0.7}, {"step": 3, "train_runtime": 9.0}]
    path.write_text("\n".join(json.dumps(e) for e in lines) + '\n{"step": 4, "mr/me')

    entries = read_metrics(path)

    assert series(entries, "mr/mean") == ([1, 2], [0.1, 0.3])
    assert series(entries, "mr/task") == ([], [])  # the replayed step 2 replaced the first one whole
    assert series(entries, "train_runtime") == ([3], [9.0]) and series(entries, "loss") == ([3], [0.7])


def test_curves_are_drawn_for_logged_keys_and_an_unknown_key_is_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "grpo").mkdir(parents=True)
    (run / "grpo" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "mr/mean": s / 10, "mr/ask_rate": 0.5}) + "\n" for s in range(1, 8)))
    out = tmp_path / "curves.png"

    assert main([str(run), "grpo", "--keys", "mr/mean,mr/ask_rate", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CollabError, match="no logged entry has `mr/task`.*mr/ask_rate, mr/mean"):
        plot_curves(read_metrics(run / "grpo" / "metrics.jsonl"), ["mr/task"], out)
