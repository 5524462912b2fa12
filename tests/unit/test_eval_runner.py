"""The evaluation runner end to end with scripted policies, the scripted sharded user and a hand-written task file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collab.backends.base import Backend, Request
from collab.chat import Generation
from collab.cli import main
from collab.config import EvalStage, Recipe, RewardConfig, SimulatorConfig, TasksConfig, TrainerStage
from collab.errors import CollabError
from collab.evaluate.runner import (
    EvalSettings,
    ModelRef,
    conversation_seed,
    evaluate,
    resolve_system_prompt,
    run_eval_stage,
    stage_model_refs,
)
from collab.factory import parse_openai_spec
from collab.simulators.sharded import ShardedSimulator

# Written by hand from the task record format (docs/tasks.md): two tasks miss a number, two are complete.
TASKS_JSONL = """\
{"id": "apples", "kind": "math", "goal": "Tom has 3 boxes of apples. Each box holds 4 apples. How many apples does Tom have?", "opening": "Tom has some boxes of apples and each box holds 4 apples. How many apples does Tom have?", "facts": ["Tom has 3 boxes."], "answer": "12", "needs_clarification": true}
{"id": "pens", "kind": "math", "goal": "Ann buys 2 packs of pens with 6 pens in each pack. How many pens does she buy?", "answer": "12"}

{"id": "eggs", "kind": "math", "goal": "A farm has 5 hens. Each hen lays 3 eggs. How many eggs are laid?", "opening": "A farm has some hens and each lays 3 eggs. How many eggs are laid?", "facts": ["The farm has 5 hens."], "answer": "15", "needs_clarification": true}
{"id": "sum", "kind": "math", "goal": "What is 7 + 8?", "answer": "15", "metadata": {"source": "hand"}}
"""

ASK = "Could you tell me how many boxes or hens there are?"
ANSWER = "The answer is \\boxed{12}."


class ScriptedBackend(Backend):
    """Replies by the number of assistant turns so far; counts requests so tests can see what a rerun skips."""

    def __init__(self, script: list[str], name: str = "scripted") -> None:
        super().__init__(name)
        self.script = script
        self.requests_seen = 0

    @property
    def identity(self) -> str:
        return self.name

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        self.requests_seen += len(requests)
        out = []
        for r in requests:
            turn = sum(1 for m in r.messages if m["role"] == "assistant")
            out.append(Generation(text=self.script[min(turn, len(self.script) - 1)], completion_tokens=5))
        return out


@pytest.fixture()
def tasks_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_tasks.jsonl"
    path.write_text(TASKS_JSONL)
    return path


def eval_settings(tasks_file: Path, **stage: Any) -> EvalSettings:
    """The settings of an eval stage on `tasks_file` without MR, every other value at its recipe default."""
    return EvalSettings.for_stage(Recipe(tasks=TasksConfig(name=str(tasks_file))), EvalStage(kind="eval", mr=False, **stage))


def _run(tasks_file: Path, out: Path, backends: dict[str, Backend], **overrides: Any) -> dict[str, Any]:
    settings = replace(eval_settings(tasks_file, max_turns=2, resamples=200, batch_size=3), **overrides)
    return evaluate(
        list(backends), settings, out, simulator=ShardedSimulator(max_turns=2), loader=lambda ref: backends[ref.label]
    )


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]


def test_hand_written_task_file_evaluates_with_known_metrics(tasks_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    asker, answerer = ScriptedBackend([ASK, ANSWER], "asker"), ScriptedBackend([ANSWER], "answerer")
    results = _run(tasks_file, out, {"asker": asker, "answerer": answerer})

    a, b = results["models"]["asker"], results["models"]["answerer"]
    assert a["ask_rate"]["mean"] == 1.0 and a["ask_rate"]["n"] == 2
    assert a["over_ask_rate"]["mean"] == 1.0 and a["over_ask_rate"]["n"] == 2
    assert a["action_accuracy"]["mean"] == 0.5
    assert b["ask_rate"]["mean"] == 0.0 and b["over_ask_rate"]["mean"] == 0.0
    assert b["action_accuracy"]["mean"] == 0.5
    # \boxed{12} is right for apples and pens only
    assert a["task_score"]["mean"] == 0.5 and b["task_score"]["mean"] == 0.5
    # the asker always takes two turns (ask, answer); the answerer is done after one turn on apples and pens
    # (correct) and on sum (wrong, nothing left to reveal), and gets a second try on eggs after a fact
    assert a["turns"]["mean"] == 2.0
    assert b["turns"]["mean"] == 1.25
    # the ScriptedBackend has no tokenizer: whitespace words of the two turns
    assert a["tokens"]["mean"] == len(ASK.split()) + len(ANSWER.split())
    assert b["premature_answer_rate"]["mean"] == 1.0 and a["premature_answer_rate"]["mean"] == 0.0
    assert results["comparisons"]["answerer vs asker"]["ask_rate"] == {"diff": -1.0, "ci_low": -1.0, "ci_high": -1.0}
    assert results["meta"]["tasks"] == {"count": 4, "needs_clarification": 2, "complete": 2}
    assert {p.name for p in out.iterdir()} >= {"results.json", "conversations.jsonl", "report.md", "report.html"}

    rows = _rows(out)
    assert len(rows) == 8
    apples = next(r for r in rows if r["model"] == "asker" and r["task_id"] == "apples")
    assert [m["role"] for m in apples["messages"]] == ["user", "assistant", "user", "assistant"]
    assert apples["messages"][2]["content"].endswith("Tom has 3 boxes.")
    assert apples["scores"]["task_score"] == 1.0 and apples["final_artifact"] == ANSWER
    assert apples["seed"] == conversation_seed(0, "apples", 0)


def test_rerun_skips_done_conversations_and_never_duplicates(tasks_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    backend = ScriptedBackend([ASK, ANSWER])
    _run(tasks_file, out, {"m": backend})
    assert backend.requests_seen == 8  # 4 tasks x 2 assistant turns
    _run(tasks_file, out, {"m": backend})
    assert backend.requests_seen == 8
    assert len(_rows(out)) == 4

    # More runs: only the new (task, run) pairs are simulated.
    results = _run(tasks_file, out, {"m": backend}, runs=2)
    assert backend.requests_seen == 16
    assert sorted((r["task_id"], r["run"]) for r in _rows(out)) == sorted(
        (t, run) for t in ("apples", "pens", "eggs", "sum") for run in (0, 1)
    )
    assert "task_score_aptitude" in results["models"]["m"]


def test_a_conversation_torn_by_a_crash_is_run_again_once(tasks_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    backend = ScriptedBackend([ASK, ANSWER])
    _run(tasks_file, out, {"m": backend})
    path = out / "conversations.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last row lost its end mid-write
    _run(tasks_file, out, {"m": backend})
    assert backend.requests_seen == 8 + 2
    rows = _rows(out)
    assert len(rows) == 4 and len({(r["task_id"], r["run"]) for r in rows}) == 4


def test_failed_conversations_are_saved_counted_and_excluded(tasks_file: Path, tmp_path: Path) -> None:
    class FailingOnEggs(ScriptedBackend):
        def _generate_batch(self, requests: list[Request]) -> list[Generation]:
            out = super()._generate_batch(requests)
            return [Generation.failure("HTTP 500: boom") if "hens" in r.messages[0]["content"] else g
                    for r, g in zip(requests, out)]

    results = _run(tasks_file, tmp_path / "eval", {"m": FailingOnEggs([ANSWER])})
    failures = results["meta"]["failures"]["m"]
    assert failures["conversations_failed"] == 1 and failures["reasons"] == {"policy": 1}
    assert results["models"]["m"]["task_score"]["n"] == 3
    assert results["models"]["m"]["task_score"]["mean"] == pytest.approx(2 / 3)
    failed = [r for r in _rows(tmp_path / "eval") if r["failed"]]
    assert len(failed) == 1 and failed[0]["scores"] == {} and failed[0]["task_id"] == "eggs"


def test_full_mode_turns_every_task_complete(tasks_file: Path, tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    results = _run(tasks_file, tmp_path / "eval", {"m": backend}, mode="full")
    m = results["models"]["m"]
    assert m["ask_rate"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert m["over_ask_rate"]["n"] == 4
    first_user = {r["task_id"]: r["messages"][0]["content"] for r in _rows(tmp_path / "eval")}
    assert first_user["apples"].startswith("Tom has 3 boxes of apples.")


def test_resuming_with_other_settings_is_refused(tasks_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    _run(tasks_file, out, {"m": ScriptedBackend([ANSWER])})
    with pytest.raises(CollabError, match="other settings"):
        _run(tasks_file, out, {"m": ScriptedBackend([ANSWER])}, mode="concat")


def test_mr_is_the_conversation_reward_when_configured(tasks_file: Path, tmp_path: Path) -> None:
    reward = RewardConfig(token_lambda=0.01, interactivity="none")
    results = _run(tasks_file, tmp_path / "eval", {"m": ScriptedBackend([ANSWER])}, reward=reward)
    rows = {r["task_id"]: r for r in _rows(tmp_path / "eval")}
    apples = rows["apples"]
    # window token mode counts every user and assistant token of the conversation, capped at 1
    tokens = sum(len(m["content"].split()) for m in apples["messages"])
    assert apples["scores"]["mr"] == pytest.approx(1.0 - 0.01 * tokens)
    assert results["models"]["m"]["mr"]["n"] == 4


def test_duplicate_model_labels_are_refused(tasks_file: Path, tmp_path: Path) -> None:
    with pytest.raises(CollabError, match="unique"):
        evaluate(["a", "a"], eval_settings(tasks_file), tmp_path, simulator=ShardedSimulator())


def test_openai_specs_and_named_system_prompts() -> None:
    url = "http://127.0.0.1:8000/v1"
    assert parse_openai_spec(f"openai:gpt-4o-mini@{url}") == ("gpt-4o-mini", url)
    assert parse_openai_spec("openai:gpt-4o-mini") == ("gpt-4o-mini", None)
    with pytest.raises(CollabError, match="names no model"):
        parse_openai_spec("openai:@http://x")
    assert resolve_system_prompt("proactive").startswith("You are a collaborative assistant.")
    assert resolve_system_prompt("Be brief.") == "Be brief."
    assert resolve_system_prompt(None) is None


def test_stage_models_resolve_training_stages_to_their_final_folder(tmp_path: Path) -> None:
    recipe = Recipe(stages=[TrainerStage(kind="sft"), EvalStage(kind="eval", models=["tiny-random-smollm2", "sft"])])
    refs = stage_model_refs(recipe, recipe.stages[1], tmp_path)  # type: ignore[arg-type]
    assert refs == [
        ModelRef("tiny-random-smollm2", "tiny-random-smollm2"),
        ModelRef("sft", str(tmp_path / "sft" / "final")),
    ]
    default = Recipe(stages=[TrainerStage(kind="sft"), EvalStage(kind="eval")])
    assert [r.label for r in stage_model_refs(default, default.stages[1], tmp_path)] == [  # type: ignore[arg-type]
        "smollm2-135m-instruct", "sft"]


def test_eval_stage_of_a_recipe_writes_into_the_stage_folder(tasks_file: Path, tmp_path: Path) -> None:
    recipe = Recipe(
        tasks=TasksConfig(name=str(tasks_file)),
        simulator=SimulatorConfig(max_turns=1),
        reward=RewardConfig(policy_max_new_tokens=8),
        stages=[EvalStage(kind="eval", name="final_eval", models=["tiny-random-smollm2"])],
    )
    results = run_eval_stage(recipe, recipe.stages[0], tmp_path)  # type: ignore[arg-type]
    failures = results["meta"]["failures"]["tiny-random-smollm2"]
    assert results["models"]["tiny-random-smollm2"]["task_score"]["n"] + failures["metric_failures"].get(
        "task_score", 0) == 4
    assert results["models"]["tiny-random-smollm2"]["turns"]["mean"] == 1.0
    assert "mr" in results["models"]["tiny-random-smollm2"]  # a recipe always configures the reward
    assert (tmp_path / "final_eval" / "report.html").is_file()
    assert (tmp_path / "cache.sqlite").is_file()


def test_cli_eval_runs_the_tiny_model_on_a_task_file(tasks_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    code = main(["eval", "--model", "tiny-random-smollm2", "--tasks", str(tasks_file), "--max-turns", "1",
                 "--max-new-tokens", "8", "--resamples", "100", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["settings"]["mode"] == "sharded"
    assert results["models"]["tiny-random-smollm2"]["turns"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 4}
    assert len((out / "conversations.jsonl").read_text().splitlines()) == 4


def test_cli_llm_simulator_without_a_model_is_a_clear_error(tasks_file: Path, tmp_path: Path, capsys) -> None:
    code = main(["eval", "--model", "x", "--tasks", str(tasks_file), "--simulator", "llm", "--out", str(tmp_path)])
    assert code == 2
    assert "--simulator-model" in capsys.readouterr().err
