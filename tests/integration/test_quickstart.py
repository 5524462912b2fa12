"""The quickstart recipe, shrunk: `collab train recipes/quickstart.yaml` on the real SmolLM2 with a handful of tasks
and steps runs data -> dpo -> eval -> transfer and writes the report with every field the README's table uses.

It proves the pipeline, not the learning: the learning claim rests on the full run in docs/quickstart.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collab.cli import main

pytestmark = pytest.mark.integration
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
SHRINK = [
    "tasks.limit=4", "stages.data.max_new_tokens=24", "reward.policy_max_new_tokens=24",
    "stages.dpo.trainer.max_steps=2", "stages.dpo.trainer.save_steps=2", "stages.dpo.trainer.logging_steps=1",
    "stages.eval.limit=4", "stages.eval.max_new_tokens=24",
    "stages.transfer.limit=2", "stages.transfer.max_new_tokens=24", "stages.transfer.max_turns=1",
]


def test_shrunk_quickstart_trains_and_reports_base_against_trained(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path / 'run'}", *SHRINK]
    assert main(["train", str(RECIPE), *(a for o in overrides for a in ("--set", o))]) == 0

    run = tmp_path / "run"
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["conversations"] == 4 and stats["candidates"] == 8 and stats["failed_candidates"] == 0
    assert json.loads((run / "dpo" / "DONE").read_text())["global_step"] == 2
    for stage, tasks in (("eval", 4), ("transfer", 2)):
        results = json.loads((run / stage / "results.json").read_text())
        assert sorted(results["models"]) == ["dpo", "smollm2-135m-instruct"]
        for metrics in results["models"].values():
            assert metrics["task_score"]["n"] == tasks and metrics["mr"]["n"] == tasks
            assert metrics["mr"]["ci_low"] <= metrics["mr"]["mean"] <= metrics["mr"]["ci_high"]
        report = (run / stage / "report.md").read_text()
        for field in ("task_score", "mr", "ask_rate", "over_ask_rate", "Paired differences"):
            assert field in report
    # The clarify-math test split has both kinds, so both rates have tasks behind them.
    paired = json.loads((run / "eval" / "results.json").read_text())
    base = paired["models"]["smollm2-135m-instruct"]
    assert base["ask_rate"]["n"] == 2 and base["over_ask_rate"]["n"] == 2
    difference = paired["comparisons"]["dpo vs smollm2-135m-instruct"]
    for metric in ("ask_rate", "over_ask_rate", "task_score", "mr"):
        assert difference[metric]["ci_low"] <= difference[metric]["diff"] <= difference[metric]["ci_high"]
