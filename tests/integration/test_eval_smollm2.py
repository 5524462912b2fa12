"""`collab eval` on the real SmolLM2-135M-Instruct against the tiny random model (CPU, a couple of minutes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collab.cli import main
from collab.models import embedded_model_dir

pytestmark = pytest.mark.integration

METRICS = {"task_score", "task_score_underspecified", "task_score_complete", "elicited_rate", "ask_rate",
           "over_ask_rate", "action_accuracy", "action_macro_f1", "premature_answer_rate", "turns", "tokens"}


def test_smollm2_vs_tiny_random_on_clarify_math_writes_every_report(tmp_path: Path) -> None:
    embedded_model_dir()  # one-time GGUF conversion, not part of the evaluation's time budget
    out = tmp_path / "eval"
    args = ["eval", "--model", "smollm2-135m-instruct", "--model", "tiny-random-smollm2", "--tasks", "clarify-math",
            "--split", "test", "--limit", "4", "--runs", "1", "--simulator", "sharded", "--max-turns", "2",
            "--max-new-tokens", "64", "--out", str(out)]
    # Its speed is a benchmark's business (docs/benchmarks.md): under load, spinning threads inflate even CPU time.
    assert main(args) == 0

    assert {p.name for p in out.iterdir()} >= {"results.json", "conversations.jsonl", "report.md", "report.html"}
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"smollm2-135m-instruct", "tiny-random-smollm2"}
    for metrics in results["models"].values():
        assert set(metrics) == METRICS
        assert all(set(e) == {"mean", "ci_low", "ci_high", "n"} for e in metrics.values())
        assert 1.0 <= metrics["turns"]["mean"] <= 2.0
    assert set(results["comparisons"]) == {"tiny-random-smollm2 vs smollm2-135m-instruct"}
    rows = [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    assert all(r["messages"][0]["role"] == "user" and r["messages"][1]["role"] == "assistant" for r in rows
               if not r["failed"])
    assert "Paired differences" in (out / "report.md").read_text()
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2

    # A rerun finds every conversation done and loads no model.
    cpu_start = time.process_time()
    assert main(args) == 0
    assert time.process_time() - cpu_start < 30
    assert len((out / "conversations.jsonl").read_text().splitlines()) == 8
