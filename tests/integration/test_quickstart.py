"""The quickstart recipe, shrunk: `collab train recipes/quickstart.yaml` on the real SmolLM2 with a handful of tasks
and steps runs data -> dpo -> eval and writes the report with every field the README's table uses.

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
    # Four requests are too few for the recipe's pair filters to keep a pair reliably; the pipeline needs one.
    "stages.data.min_gap=0.0", "stages.data.min_chosen_mr=null", "stages.data.balance_actions=false",
    "stages.dpo.trainer.max_steps=2", "stages.dpo.trainer.save_steps=2", "stages.dpo.trainer.logging_steps=1",
    "stages.eval.limit=4", "stages.eval.max_new_tokens=24",
]


def test_shrunk_quickstart_trains_and_reports_base_against_trained(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path / 'run'}", *SHRINK]
    assert main(["train", str(RECIPE), *(a for o in overrides for a in ("--set", o))]) == 0

    run = tmp_path / "run"
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["conversations"] == 4 and stats["candidates"] == 16 and stats["failed_candidates"] == 0
    assert json.loads((run / "dpo" / "DONE").read_text())["global_step"] == 2
    results = json.loads((run / "eval" / "results.json").read_text())
    assert sorted(results["models"]) == ["dpo", "smollm2-135m-instruct"]
    for metrics in results["models"].values():
        assert metrics["task_score"]["n"] == 4 and metrics["mr"]["n"] == 4
        assert metrics["mr"]["ci_low"] <= metrics["mr"]["mean"] <= metrics["mr"]["ci_high"]
        # The clarify-message test split alternates both kinds, so every split metric has tasks behind it.
        for metric in ("task_score_underspecified", "task_score_complete", "elicited_rate", "ask_rate",
                       "over_ask_rate"):
            assert metrics[metric]["n"] == 2, metric
    report = (run / "eval" / "report.md").read_text()
    for field in ("task_score_underspecified", "elicited_rate", "mr", "ask_rate", "over_ask_rate",
                  "Paired differences", "Example conversations"):
        assert field in report
    difference = results["comparisons"]["dpo vs smollm2-135m-instruct"]
    for metric in ("task_score_underspecified", "elicited_rate", "ask_rate", "over_ask_rate", "task_score", "mr"):
        assert difference[metric]["ci_low"] <= difference[metric]["diff"] <= difference[metric]["ci_high"]
