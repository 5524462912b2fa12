"""The pipeline without training: order, skipping, dispatch through the stage-kind table, and the checks the driver
makes before a trainer is launched (so they fail in seconds, not after a launch)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from collab.config import Recipe, load_recipe, validate_recipe
from collab.errors import CollabError
from collab.run.layout import StagePaths
from collab.run.record import open_run
from collab.stages import kinds, pipeline
from collab.train import driver


def recipe(tmp_path: Path, dpo_trainer: dict[str, Any] | None = None) -> Recipe:
    return validate_recipe({
        "name": "orchestra", "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random-smollm2"},
        "stages": [{"kind": "data"}, {"kind": "dpo", "data_from": "data", "trainer": dpo_trainer or {}},
                   {"kind": "eval", "models": ["dpo"]}],
    })


@pytest.fixture
def fake_kinds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """data and eval stages served by an in-memory module that records its calls."""
    calls: list[tuple[str, str]] = []
    module = types.ModuleType("fake_stage_kinds")

    def run_data_stage(recipe: Recipe, stage: Any, run_dir: Path) -> None:
        calls.append(("data", stage.label))

    def run_eval_stage(recipe: Recipe, stage: Any, run_dir: Path) -> dict[str, Any]:
        calls.append(("eval", stage.label))
        return {}

    module.run_data_stage = run_data_stage  # type: ignore[attr-defined]
    module.run_eval_stage = run_eval_stage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_stage_kinds", module)
    for kind in ("data", "eval"):
        entry = dataclasses.replace(kinds.KINDS[kind], run=f"fake_stage_kinds:run_{kind}_stage")
        monkeypatch.setitem(kinds.KINDS, kind, entry)
    return calls


def test_missing_stage_kind_module_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = dataclasses.replace(kinds.KINDS["data"], run="collab.data.not_written_yet:run_data_stage")
    monkeypatch.setitem(kinds.KINDS, "data", missing)
    r = recipe(tmp_path)
    with pytest.raises(CollabError, match=r"collab.data.not_written_yet:run_data_stage cannot be imported"):
        pipeline.run_stage(r, r.stages[0], r.run_dir)


def test_other_kinds_are_dispatched_and_marked_done(tmp_path: Path, fake_kinds: list[tuple[str, str]]) -> None:
    r = recipe(tmp_path)
    pipeline.run_stage(r, r.stages[0], r.run_dir)
    assert fake_kinds == [("data", "data")]
    assert json.loads((r.run_dir / "data" / "DONE").read_text())["kind"] == "data"


def test_finished_stages_are_skipped_and_the_rest_run_in_order(
    tmp_path: Path, fake_kinds: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    r = recipe(tmp_path)
    for label in ("data", "dpo"):
        StagePaths(r.run_dir, label).mark_done()
    pipeline.train(r)
    assert fake_kinds == [("eval", "eval")]
    out = capsys.readouterr().out
    assert "stage 'data' is done; skipping it" in out and "stage 'dpo' is done; skipping it" in out
    assert (r.run_dir / "recipe.resolved.yaml").is_file()


def test_single_stage_whose_input_has_not_finished_names_it(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match="stage 'dpo' needs stage 'data', which has not finished"):
        pipeline.train(recipe(tmp_path), stage="dpo")


def test_single_stage_uses_the_outputs_of_finished_inputs_without_running_them(
    tmp_path: Path, fake_kinds: list[tuple[str, str]]
) -> None:
    r = recipe(tmp_path)
    for label in ("data", "dpo"):
        StagePaths(r.run_dir, label).mark_done()
    pipeline.train(r, stage="eval")
    assert fake_kinds == [("eval", "eval")]


def test_eval_stage_run_alone_names_the_compared_training_stage_that_has_not_finished(
    tmp_path: Path, fake_kinds: list[tuple[str, str]]
) -> None:
    r = recipe(tmp_path)
    StagePaths(r.run_dir, "data").mark_done()
    with pytest.raises(CollabError, match="stage 'eval' needs stage 'dpo', which has not finished"):
        pipeline.train(r, stage="eval")
    implicit = r.model_copy(update={"stages": [*r.stages[:2], r.stages[2].model_copy(update={"models": []})]})
    with pytest.raises(CollabError, match="stage 'eval' needs stage 'dpo'"):  # no models: every earlier trainer
        pipeline.train(implicit, stage="eval")
    assert fake_kinds == []


@pytest.mark.parametrize(("done", "missing"), [([], "data"), (["data"], "sft")])
def test_a_paper_pipeline_stage_run_alone_names_its_first_unfinished_input_and_the_command(
    tmp_path: Path, done: list[str], missing: str
) -> None:
    from collab.config import recipes_root

    paper = load_recipe(recipes_root() / "qwen3-8b" / "math-hard.yaml", [f"output_dir={tmp_path}"])
    for label in done:
        StagePaths(tmp_path, label).mark_done()
    with pytest.raises(CollabError, match=f"stage 'grpo' needs stage '{missing}', which has not finished in "
                       f".*Fix: run it first: `collab train RECIPE --stage {missing}`"):
        pipeline.train(paper, stage="grpo")
    assert not (tmp_path / "grpo").exists()


def test_unknown_stage_name_lists_the_stages(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match=r"no stage named 'dpoo'.*\['data', 'dpo', 'eval'\]"):
        pipeline.train(recipe(tmp_path), stage="dpoo")
    assert not (tmp_path / "run").exists()


def test_resume_of_a_folder_that_is_not_a_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match="is not a run directory \\(no recipe.resolved.yaml in it\\)"):
        pipeline.resume(tmp_path)
    with pytest.raises(CollabError, match="does not exist"):
        pipeline.resume(tmp_path / "nope")


def test_resume_of_a_finished_run_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = recipe(tmp_path)
    open_run(r, r.run_dir)
    for s in r.stages:
        StagePaths(r.run_dir, s.label).mark_done()
    assert pipeline.resume(r.run_dir) == r.run_dir
    assert "every stage is already done; nothing to resume" in capsys.readouterr().out


def prepared_dpo(tmp_path: Path, **trainer: Any) -> tuple[Recipe, StagePaths]:
    r = recipe(tmp_path, trainer)
    open_run(r, r.run_dir)
    StagePaths(r.run_dir, "data").mark_done()
    return r, StagePaths(r.run_dir, "dpo")


def test_resume_with_another_number_of_processes_is_refused_before_launching(tmp_path: Path) -> None:
    r, paths = prepared_dpo(tmp_path)
    checkpoint = paths.checkpoints / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"w")
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    paths.launch.write_text(json.dumps({"world_size": 8}))
    with pytest.raises(CollabError, match="started with 8 processes and would now be launched with 1; its "
                                          "checkpoint checkpoint-4 cannot continue"):
        pipeline.resume(r.run_dir)
    assert not paths.log.exists()  # nothing was launched


def test_bf16_on_a_cpu_machine_fails_before_launching(tmp_path: Path) -> None:
    r, paths = prepared_dpo(tmp_path, bf16=True)
    with pytest.raises(CollabError, match="--set stages.1.trainer.bf16=false"):
        driver.run_trainer_stage(r, r.stages[1], r.run_dir)  # type: ignore[arg-type]
    assert not paths.log.exists()


def test_trainer_stage_without_data_from_is_refused(tmp_path: Path) -> None:
    r = validate_recipe({"name": "x", "output_dir": str(tmp_path), "stages": [{"kind": "sft"}]})
    with pytest.raises(CollabError, match="stage 'sft' \\(sft\\) has no data_from"):
        driver.run_trainer_stage(r, r.stages[0], tmp_path)  # type: ignore[arg-type]


def test_a_longer_recipe_of_the_lineage_trains_into_the_run_with_its_override(
    tmp_path: Path, fake_kinds: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    # What a Slurm job does after an earlier recipe of the lineage: `collab train LONGER.yaml --stage S --set ...`
    # (not `collab resume`, whose resolved recipe has no stage S yet and would drop the override).
    shorter = validate_recipe({"name": "lineage", "output_dir": str(tmp_path / "run"),
                               "model": {"name": "tiny-random-smollm2"}, "stages": [{"kind": "data"}]})
    pipeline.train(shorter)
    longer_file = tmp_path / "longer.yaml"
    longer_file.write_text(
        f"name: lineage\noutput_dir: {tmp_path / 'run'}\nmodel: {{name: tiny-random-smollm2}}\n"
        "stages:\n  - kind: data\n  - kind: eval\n    models: [base]\n")
    longer = load_recipe(longer_file, ["stages.1.limit=7"])
    pipeline.train(longer, stage="eval")
    assert fake_kinds == [("data", "data"), ("eval", "eval")]
    resolved = load_recipe(tmp_path / "run" / "recipe.resolved.yaml")
    assert [s.label for s in resolved.stages] == ["data", "eval"]
    assert resolved.stages[1].limit == 7


def test_train_says_it_continues_a_stage_from_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, paths = prepared_dpo(tmp_path)
    checkpoint = paths.checkpoints / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"w")
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    launched: list[str] = []
    monkeypatch.setattr(pipeline, "run_stage", lambda recipe, stage, run_dir, out=None: launched.append(stage.label))
    pipeline.train(r, stage="dpo")
    assert launched == ["dpo"]
    assert f"stage 'dpo' (dpo) continues from {checkpoint}" in capsys.readouterr().out
