"""`collab plan` checked against the counts an actual small run records.

A real `collab data` run (tiny model, 3 clarify-math tasks, scripted user) writes its backend statistics to
`<run>/data/store/shard-*.summary.json`; the plan of the same recipe must bound them from above and stay close:
the scripted user may end a rollout early, so actual <= predicted <= 1.5 x actual (TOLERANCE). The candidate count
is exact: K per scored turn.

The model is tiny-random-smollm2 with a generation config that ends a reply on half of the vocabulary: a random
model otherwise never emits its end-of-turn token, every candidate hits the token limit, gets the truncation
penalty without rollouts, and the run would record candidates only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from collab.cli import main
from collab.config import load_recipe
from collab.plan import plan_recipe

pytestmark = pytest.mark.integration
TOLERANCE = 1.5


def stopping_tiny_model(folder: Path) -> Path:
    """tiny-random-smollm2, copied, with every even token id ending a reply (replies of about two tokens)."""
    from collab.models import tiny_model_dir

    if not folder.exists():
        shutil.copytree(tiny_model_dir(), folder)
        config = json.loads((folder / "config.json").read_text())
        generation = json.loads((folder / "generation_config.json").read_text())
        generation["eos_token_id"] = list(range(0, config["vocab_size"], 2))
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def run_and_plan(tmp_path: Path, *, window: int, max_turns: int) -> tuple[dict[str, Any], Any]:
    model = stopping_tiny_model(tmp_path.parent / "tiny-stopping")
    raw = {
        "name": "plan-vs-run", "output_dir": str(tmp_path / "run"),
        "model": {"name": str(model)}, "policy": {"kind": "hf"},
        "tasks": {"name": "clarify-math", "limit": 3},
        "simulator": {"kind": "sharded", "max_turns": 4},
        "reward": {"window": window, "samples": 2, "interactivity": "elicitation", "policy_max_new_tokens": 8},
        "stages": [{"kind": "data", "candidates": 2, "max_turns": max_turns, "max_new_tokens": 8}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))

    assert main(["data", str(path)]) == 0

    summaries = sorted((tmp_path / "run" / "data" / "store").glob("shard-*.summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    # the plan of the finished run: its counts must not depend on what the run left behind
    plan = plan_recipe(load_recipe(path), stage="data").stages[0]
    return summary, plan


@pytest.mark.parametrize(("window", "max_turns"), [(1, 1), (2, 2)], ids=["w1-turns1", "w2-turns2"])
def test_plan_bounds_the_recorded_requests_of_a_real_data_run(tmp_path: Path, window: int, max_turns: int) -> None:
    summary, plan = run_and_plan(tmp_path, window=window, max_turns=max_turns)
    bound = plan.bound.counts
    policy, reward = summary["policy"], summary["reward"]
    assert reward["truncated_candidates"] == 0 and reward["rollouts"] > 0  # the run really rolled out

    # candidates: exactly K per scored turn, and at most K x tasks x turn limit
    assert reward["candidates"] == 2 * summary["turn_records"]
    if max_turns == 1:
        assert bound.sampled == reward["candidates"] == 2 * 3
    assert reward["candidates"] <= bound.sampled

    # every policy request: candidates + K*S rollouts of w assistant turns per scored turn
    assert policy["failures"] == 0 and policy["cache_hits"] == 0
    assert policy["requests"] <= bound.policy.requests <= TOLERANCE * policy["requests"]
    assert policy["calls"] <= bound.policy.calls

    # the scripted user: the openings plus w turns per rollout
    turns = summary["simulator"]["turns"]
    assert turns <= bound.simulator.requests <= TOLERANCE * turns
