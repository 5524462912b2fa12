"""Evaluation MR and training MR are one computation: the same conversation gets the same R* and components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collab.backends.base import Backend, Request
from collab.chat import Generation, message
from collab.config import EvalStage, Recipe, RewardConfig, TasksConfig
from collab.evaluate.runner import EvalSettings, evaluate, load_tasks
from collab.reward import Candidate, MultiturnReward
from collab.simulators.sharded import ShardedSimulator

TASK = {"id": "apples", "kind": "math", "needs_clarification": True, "answer": "12",
        "goal": "Tom has 3 boxes of apples. Each box holds 4 apples. How many apples does Tom have?",
        "opening": "Tom has some boxes of apples and each box holds 4 apples. How many apples does Tom have?",
        "facts": ["Tom has 3 boxes."]}
ASK = "Could you tell me how many boxes there are?"
ANSWER = "Then Tom has 3 x 4 apples. The answer is \\boxed{12}."


class Scripted(Backend):
    """Replies by the number of assistant turns so far, so a rollout continues a conversation exactly."""

    def __init__(self) -> None:
        super().__init__("scripted")

    @property
    def identity(self) -> str:
        return self.name

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        script = [ASK, ANSWER]
        turns = [sum(1 for m in r.messages if m["role"] == "assistant") for r in requests]
        return [Generation(text=script[min(t, 1)], completion_tokens=5) for t in turns]


def evaluated_conversation(tmp_path: Path, reward: RewardConfig) -> tuple[dict[str, Any], EvalSettings]:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(TASK) + "\n")
    recipe = Recipe(tasks=TasksConfig(name=str(tasks)), reward=reward)
    settings = EvalSettings.for_stage(recipe, EvalStage(kind="eval", max_turns=2, resamples=10))
    evaluate(["m"], settings, tmp_path / "eval", simulator=ShardedSimulator(max_turns=2), loader=lambda _: Scripted())
    (row,) = [json.loads(line) for line in (tmp_path / "eval" / "conversations.jsonl").read_text().splitlines()]
    return row, settings


def training_mr_of_its_first_reply(row: dict[str, Any], settings: EvalSettings, reward: RewardConfig) -> Any:
    """MR of the conversation's first assistant reply as training and data compute it: one rollout (S=1) over the
    rest of the conversation, with the evaluation's conversation seed, so the rollout is that very conversation."""
    (task,) = load_tasks(settings)
    opening, first_reply = row["messages"][0], row["messages"][1]
    config = reward.model_copy(update={"samples": 1, "window": 1})
    mr = MultiturnReward(Scripted(), ShardedSimulator(max_turns=2), config)
    candidate = Candidate(task, [message("user", opening["content"])], first_reply["content"])
    (result,) = mr.score([candidate], seeds=[row["seed"]])
    assert [opening, *result.rollouts[0].messages] == row["messages"]  # the same conversation
    return result


@pytest.mark.parametrize("interactivity", ["elicitation", "none"])
def test_eval_mr_equals_training_mr_for_the_same_conversation(tmp_path: Path, interactivity: str) -> None:
    reward = RewardConfig(token_mode="assistant", token_lambda=0.01, interactivity=interactivity)  # type: ignore[arg-type]
    row, settings = evaluated_conversation(tmp_path, reward)

    trained = training_mr_of_its_first_reply(row, settings, reward)

    assert row["scores"]["mr"] == trained.mr
    assert row["scores"]["mr_components"] == {c: trained.components[c] for c in ("task", "tokens", "interactivity")}
    # and the values are the real ones: the answer is right, 19 assistant words cost 0.19
    words = len(ASK.split()) + len(ANSWER.split())
    expected_interactivity = 1.0 if interactivity == "elicitation" else 0.0  # the one question obtained the one fact
    assert row["scores"]["mr_components"] == pytest.approx(
        {"task": 1.0, "tokens": -0.01 * words, "interactivity": expected_interactivity})


def test_eval_window_is_the_whole_conversation_and_training_window_starts_at_the_candidate(tmp_path: Path) -> None:
    reward = RewardConfig(token_mode="window", token_lambda=0.01, interactivity="elicitation")
    row, settings = evaluated_conversation(tmp_path, reward)

    trained = training_mr_of_its_first_reply(row, settings, reward)

    opening_words = len(row["messages"][0]["content"].split())
    assert row["scores"]["mr_components"]["tokens"] == pytest.approx(trained.components["tokens"] - 0.01 * opening_words)
    assert row["scores"]["mr_components"]["task"] == trained.components["task"] == 1.0
    assert row["scores"]["mr_components"]["interactivity"] == trained.components["interactivity"]
