"""`collab eval` as a command: W&B mode from WANDB_MODE, no empty --out folder left behind by a failure, and its flags
as the eval stage of a recipe (one schema, one set of defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collab.cli import build_parser, main
from collab.config import BackendConfig, EvalStage, Recipe, SimulatorConfig
from collab.errors import CollabError
from collab.evaluate.command import FLAG_KEYS, eval_recipe
from collab.evaluate.runner import EvalSettings
from collab.factory import backend_config_for_spec


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


# --- the flags are an eval stage ----------------------------------------------------------------------------------


def eval_flags(argv: list[str]) -> dict[str, object]:
    return vars(build_parser().parse_args(["eval", "--out", "unused", *argv]))


def test_eval_flags_build_the_stage_a_recipe_would_declare() -> None:
    flags = eval_flags(["--model", "tiny-random-smollm2", "--tasks", "clarify-math", "--runs", "2", "--max-turns", "3",
                        "--user-mode", "withhold", "--recap", "--temperature", "0.2", "--seed", "5", "--mr"])
    declared = Recipe(
        name="eval", seed=5, simulator=SimulatorConfig(max_turns=3, mode="withhold", recap=True),
        stages=[EvalStage(kind="eval", models=["tiny-random-smollm2"], tasks="clarify-math", runs=2, max_turns=3,
                          temperature=0.2)],
    )

    recipe, stage = eval_recipe(flags)

    assert recipe == declared and stage == declared.stages[0]
    assert EvalSettings.for_stage(recipe, stage).eval_key == EvalSettings.for_stage(declared, stage).eval_key


def test_eval_flags_not_given_keep_the_recipe_defaults() -> None:
    recipe, stage = eval_recipe(eval_flags(["--model", "m", "--tasks", "clarify-math"]))
    settings = EvalSettings.for_stage(recipe, stage)

    assert (settings.split, settings.limit, settings.runs, settings.mode, settings.max_turns) == (
        "test", None, 1, "sharded", 7)
    assert (settings.max_new_tokens, settings.temperature, settings.batch_size, settings.resamples) == (
        256, 0.7, 96, 2000)
    assert settings.reward is None  # `collab eval` reports mr only with --mr


def test_every_eval_flag_sets_a_recipe_key() -> None:
    dests = set(eval_flags(["--model", "m", "--tasks", "t"])) - {"command", "out"}
    assert dests == set(FLAG_KEYS)


def test_simulator_model_spec_becomes_the_simulator_backend_section() -> None:
    url = "http://127.0.0.1:8000/v1"
    recipe, _ = eval_recipe(eval_flags(["--model", "m", "--tasks", "t", "--simulator", "llm",
                                        "--simulator-model", f"openai:gpt-4o-mini@{url}"]))
    assert recipe.simulator.kind == "llm"
    assert recipe.simulator.backend == BackendConfig(kind="openai", model="gpt-4o-mini", base_url=url)
    assert backend_config_for_spec("runs/q/dpo/final") == BackendConfig(model="runs/q/dpo/final")


def test_a_value_the_schema_refuses_is_named_by_its_flag() -> None:
    with pytest.raises(CollabError, match=r"eval\.give_up: --give-up must be at most 1"):
        eval_recipe(eval_flags(["--model", "m", "--tasks", "t", "--give-up", "1.5"]))
