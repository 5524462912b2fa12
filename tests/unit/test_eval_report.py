"""Report files: results.json schema, markdown and HTML tables with CIs, embedded plots, W&B offline logging."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from collab.config import TrackingConfig
from collab.evaluate.aggregate import aggregate
from collab.evaluate.report import (
    format_difference,
    format_estimate,
    log_wandb,
    render_markdown,
    wandb_mode,
    write_reports,
)


def _row(model: str, task: str, needs: bool, asked: float, score: float) -> dict[str, Any]:
    scores = {"task_score": score, "asked": asked, "premature_answer": 0.0, "over_ask": asked * (not needs),
              "turns": 1.0 + asked, "first_action": "ask" if asked else "answer", "tokens": 12,
              "elicited": asked if needs else None}
    return {"model": model, "task_id": task, "run": 0, "needs_clarification": needs, "n_facts": int(needs),
            "failed": None, "messages": [{"role": "user", "content": f"task {task}"},
                                         {"role": "assistant", "content": "The answer is 3."}],
            "scores": scores, "errors": {}}


ROWS = [
    *[_row("base", f"u{i}", True, 0.0, float(i % 2)) for i in range(6)],
    *[_row("base", f"c{i}", False, 0.0, 1.0) for i in range(6)],
    *[_row("tuned", f"u{i}", True, 1.0, 1.0) for i in range(6)],
    *[_row("tuned", f"c{i}", False, float(i == 0), 1.0) for i in range(6)],
    {**_row("tuned", "x", False, 0.0, 0.0), "failed": "policy: timeout", "scores": {}},
]


def _results() -> dict[str, Any]:
    return aggregate(ROWS, ["base", "tuned"], resamples=300, seed=0)


def test_report_files_exist_with_their_fields(tmp_path: Path) -> None:
    results = _results()
    paths = write_reports(results, ROWS, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "report.md", "report.html"}
    saved = json.loads(paths["results"].read_text())
    assert saved["models"]["tuned"]["ask_rate"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 6}
    assert saved["models"]["base"]["ask_rate"]["mean"] == 0.0
    assert saved["comparisons"]["tuned vs base"]["ask_rate"] == {"diff": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert saved["meta"]["failures"]["tuned"]["conversations_failed"] == 1

    md = paths["markdown"].read_text()
    assert "| ask_rate | 0.000 [0.000, 0.000] (n=6) | 1.000 [1.000, 1.000] (n=6) |" in md
    assert "| ask_rate | +1.000 [1.000, 1.000] * |" in md
    assert "| tuned | 1 of 13 | policy: 1 | - |" in md
    assert "## Example conversations" in md and "assistant: The answer is 3." in md

    page = paths["html"].read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<td>over_ask_rate</td>" in page and "tuned vs base" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched from elsewhere


def test_missing_estimates_render_as_na_with_n() -> None:
    assert format_estimate({"mean": None, "ci_low": None, "ci_high": None, "n": 0}, "ask_rate") == "n/a (n=0)"
    assert format_estimate({"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}, "ask_rate") == "0.500 (n=1)"
    tokens = {"mean": 31.25, "ci_low": 20.0, "ci_high": 40.5, "n": 9}
    assert format_estimate(tokens, "tokens") == "31.2 [20.0, 40.5] (n=9)"
    assert format_difference({"diff": -0.25, "ci_low": -0.5, "ci_high": 0.1}, "task_score") == "-0.250 [-0.500, 0.100]"
    assert format_difference({"diff": None, "ci_low": None, "ci_high": None}, "task_score") == "n/a"


def test_single_model_report_without_complete_tasks_still_renders(tmp_path: Path) -> None:
    rows = [_row("base", f"u{i}", True, 1.0, 1.0) for i in range(3)]
    results = aggregate(rows, ["base"], resamples=100, seed=0)
    write_reports(results, rows, tmp_path)
    assert "| over_ask_rate | n/a (n=0) |" in render_markdown(results)
    assert (tmp_path / "report.html").stat().st_size > 1000


def test_wandb_offline_logs_the_results_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_wandb(_results(), TrackingConfig(wandb="offline", project="collab-test"), tmp_path, run_name="eval-test")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].rglob("*.wandb"))


def test_wandb_mode_follows_the_environment_first() -> None:
    offline = TrackingConfig(wandb="offline")
    assert wandb_mode(offline, {}) == "offline"
    assert wandb_mode(offline, {"WANDB_MODE": "disabled"}) == "disabled"
    assert wandb_mode(TrackingConfig(), {"WANDB_MODE": "dryrun"}) == "offline"
    assert wandb_mode(None, {}) == "disabled"


def test_examples_show_a_question_that_obtained_the_fact_and_a_failure_per_model() -> None:
    from collab.evaluate.report import example_conversations

    rows = [
        {**_row("tuned", "a", True, 1.0, 0.0)},
        {**_row("tuned", "b", True, 1.0, 1.0)},
        {**_row("tuned", "c", False, 0.0, 1.0)},
    ]
    titles = [title for title, _ in example_conversations(rows)]
    assert len(titles) == 2
    assert titles[0].startswith("tuned on task b") and "elicited: 1.0" in titles[0]
    assert titles[1].startswith("tuned on task a") and "task_score: 0.0" in titles[1]
