"""Malformed input, one test each: the answer is one `collab: error: ...` paragraph that names the file, key, line
or argument at fault, and exit code 2; never a traceback.

The cases run through `collab.cli.main` in this process (the function behind `python -m collab.cli` and the `collab`
script; a fresh interpreter per case would cost seconds each); a handful run as real subprocesses as well, to prove
the process's exit code and that stderr holds no traceback.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from collab.cli import main
from tests.reliability.conftest import cli_env, run_collab, write_yaml


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")


def base_recipe(tmp: Path, **changes: Any) -> dict[str, Any]:
    return {"name": "bad", "output_dir": str(tmp / "run"), "model": {"name": "tiny-random-smollm2"},
            "tasks": {"name": "clarify-math", "limit": 2}, "stages": [{"kind": "data"}], **changes}


def recipe_file(tmp: Path, **changes: Any) -> str:
    return str(write_yaml(tmp / "recipe.yaml", base_recipe(tmp, **changes)))


def raw_file(tmp: Path, name: str, data: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def file_in(folder: Path, name: str, data: bytes | str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return raw_file(folder, name, data)


def run_dir_with_resolved_recipe(tmp: Path, started: tuple[str, ...] = ()) -> Path:
    """A run directory as `collab train` leaves it: the resolved recipe, and folders of the stages that started."""
    run = tmp / "run"
    write_yaml(run / "recipe.resolved.yaml", base_recipe(tmp))
    for stage in started:
        (run / stage).mkdir(parents=True)
    return run


def finished_run(tmp: Path) -> Path:
    """A run directory whose only stage, data, has finished."""
    run = run_dir_with_resolved_recipe(tmp, started=("data",))
    (run / "data" / "DONE").write_text("{}")
    return run


def finished_data_stage(tmp: Path, **trainer_stage: Any) -> str:
    """A recipe with a data stage that has finished (DONE) and an sft stage after it."""
    (tmp / "run" / "data").mkdir(parents=True)
    (tmp / "run" / "data" / "DONE").write_text("{}")
    return recipe_file(tmp, stages=[{"kind": "data"}, {"kind": "sft", "data_from": "data", **trainer_stage}])


def task_line(**fields: Any) -> str:
    return json.dumps({"id": "t1", "kind": "qa", "goal": "Which city?", "answer": "Lyon", **fields})


def tasks_file(tmp: Path, data: bytes | str) -> str:
    return raw_file(tmp, "tasks.jsonl", data)


def data_with_tasks(tmp: Path, data: bytes | str) -> list[str]:
    return ["data", recipe_file(tmp), "--tasks", tasks_file(tmp, data)]


def eval_args(tmp: Path, *args: str, model: str = "tiny-random-smollm2") -> list[str]:
    return ["eval", "--model", model, "--tasks", "clarify-math", "--limit", "1", "--out", str(tmp / "eval"), *args]


def model_dir_config_only(tmp: Path) -> str:
    """A checkpoint folder torn before its weights were written: config.json only."""
    from collab.models import tiny_model_dir

    folder = tmp / "checkpoint-3"
    folder.mkdir()
    shutil.copy(tiny_model_dir() / "config.json", folder / "config.json")
    return str(folder)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], tuple[list[str], list[str]]]  # tmp -> (argv, what the message must name)


CASES: list[Case] = [
    # --- recipes -------------------------------------------------------------------------------------------------
    Case("recipe-unknown-top-level-key", lambda t: (
        ["data", recipe_file(t, modle={"name": "x"})], ["recipe.yaml", "unknown key 'modle'", "did you mean 'model'"])),
    Case("recipe-unknown-nested-key", lambda t: (
        ["data", recipe_file(t, reward={"windw": 2})], ["recipe.yaml", "'reward.windw'", "'reward.window'"])),
    Case("recipe-wrong-type", lambda t: (
        ["data", recipe_file(t, reward={"window": "two"})], ["recipe.yaml", "'reward.window'", "'two'"])),
    Case("recipe-value-out-of-range", lambda t: (
        ["data", recipe_file(t, reward={"samples": 0})], ["recipe.yaml", "'reward.samples'", "greater than or equal"])),
    Case("recipe-unknown-stage-kind", lambda t: (
        ["data", recipe_file(t, stages=[{"kind": "sftt"}])], ["recipe.yaml", "'stages.0'", "'sftt'"])),
    Case("recipe-stage-refers-to-a-later-stage", lambda t: (
        ["data", recipe_file(t, stages=[{"kind": "sft", "data_from": "data"}, {"kind": "data"}])],
        ["recipe.yaml", "stage 'sft' refers to 'data'", "not an earlier stage"])),
    Case("recipe-duplicate-stage-names", lambda t: (
        ["data", recipe_file(t, stages=[{"kind": "data"}, {"kind": "data"}])],
        ["recipe.yaml", "stage names must be unique", "['data']"])),
    Case("recipe-unknown-trainer-argument", lambda t: (
        ["data", recipe_file(t, stages=[{"kind": "data"}, {"kind": "sft", "data_from": "data",
                                                           "trainer": {"learning_rat": 1e-5}}])],
        ["recipe.yaml", "'stages.1.trainer.learning_rat'", "SFTConfig", "did you mean 'learning_rate'"])),
    Case("recipe-trainer-argument-of-wrong-type", lambda t: (
        ["data", recipe_file(t, stages=[{"kind": "data"}, {"kind": "dpo", "data_from": "data",
                                                           "trainer": {"per_device_train_batch_size": "big"}}])],
        ["recipe.yaml", "'stages.1.trainer.per_device_train_batch_size'", "DPOConfig"])),
    Case("recipe-api-key-written-in-the-recipe", lambda t: (
        ["data", recipe_file(t, policy={"kind": "openai", "model": "m", "api_key": "not-a-real-key"})],
        ["recipe.yaml", "unknown key 'policy.api_key'", "did you mean 'policy.api_key_env'"])),
    Case("recipe-openai-policy-without-model", lambda t: (
        ["data", recipe_file(t, policy={"kind": "openai"})], ["recipe.yaml", "'policy'", "needs `model`"])),
    Case("recipe-llm-simulator-without-backend", lambda t: (
        ["data", recipe_file(t, simulator={"kind": "llm"})], ["recipe.yaml", "'simulator'", "needs `backend`"])),
    Case("recipe-file-missing", lambda t: (["data", str(t / "nope.yaml")], [str(t / "nope.yaml"), "does not exist"])),
    Case("recipe-is-a-directory", lambda t: (["data", str(t)], [str(t), "it is a directory"])),
    Case("recipe-invalid-yaml", lambda t: (
        ["data", raw_file(t, "recipe.yaml", "name: x\nmodel:\n  name: [unclosed\n")],
        [str(t / "recipe.yaml"), "is not valid YAML", "line 3"])),
    Case("recipe-not-a-mapping", lambda t: (
        ["data", raw_file(t, "recipe.yaml", "- data\n- dpo\n")], [str(t / "recipe.yaml"), "mapping", "not a list"])),
    Case("recipe-invalid-utf8", lambda t: (
        ["data", raw_file(t, "recipe.yaml", b"name: caf\xe9\n")], [str(t / "recipe.yaml"), "not valid UTF-8"])),
    Case("recipe-unknown-model-name", lambda t: (
        ["data", recipe_file(t, model={"name": "smollm2-135m-instrct"})],
        ["model", "unknown model 'smollm2-135m-instrct'", "did you mean 'smollm2-135m-instruct'"])),
    Case("recipe-model-folder-that-is-not-a-model", lambda t: (
        ["data", recipe_file(t, model={"name": str(t)})], [str(t), "is not a model directory"])),
    Case("recipe-output-dir-is-a-file", lambda t: (
        ["data", recipe_file(t, output_dir=raw_file(t, "afile", "x"))], ["output_dir", str(t / "afile"), "is a file"])),
    Case("recipe-without-a-data-stage", lambda t: (
        ["data", recipe_file(t, stages=[{"kind": "eval"}])], ["recipe 'bad' has no data stage"])),
    Case("recipe-unknown-accelerate-config", lambda t: (
        ["train", finished_data_stage(t, accelerate_config="nope", trainer={"max_steps": 1}), "--stage", "sft"],
        ["accelerate config 'nope' does not exist", "cpu"])),
    # --- --set, --shard, --stage ---------------------------------------------------------------------------------
    Case("set-without-equals", lambda t: (
        ["data", recipe_file(t), "--set", "reward.window"], ["--set 'reward.window' has no '='"])),
    Case("set-value-not-yaml", lambda t: (
        ["data", recipe_file(t), "--set", "reward.window=[1,"], ["--set reward.window", "not valid YAML"])),
    Case("set-list-index-out-of-range", lambda t: (
        ["data", recipe_file(t), "--set", "stages.5.kind=data"], ["--set stages.5", "index out of range"])),
    Case("set-key-below-a-value", lambda t: (
        ["data", recipe_file(t), "--set", "name.x=1"], ["--set name.x", "'name' is a value, not a section"])),
    Case("set-unknown-key", lambda t: (
        ["data", recipe_file(t), "--set", "reward.windw=3"], ["unknown key 'reward.windw'", "'reward.window'"])),
    Case("shard-index-out-of-range", lambda t: (["data", recipe_file(t), "--shard", "3/2"], ["--shard 3/2"])),
    Case("shard-not-i-of-n", lambda t: (["data", recipe_file(t), "--shard", "a/b"], ["--shard 'a/b'", "i/n"])),
    Case("shard-count-zero", lambda t: (["data", recipe_file(t), "--shard", "0/0"], ["--shard 0/0"])),
    Case("data-unknown-stage-name", lambda t: (
        ["data", recipe_file(t), "--stage", "nope"], ["no data stage named 'nope'", "['data']"])),
    Case("train-stage-name-typo", lambda t: (
        ["train", recipe_file(t), "--stage", "dta"], ["no stage named 'dta'", "did you mean 'data'", "['data']"])),
    Case("plan-unknown-stage-name", lambda t: (
        ["plan", recipe_file(t), "--stage", "nope"], ["no stage named 'nope'", "['data']"])),
    Case("launch-unknown-stage-name", lambda t: (
        ["launch", "slurm", recipe_file(t), "--nodes", "1", "--gpus-per-node", "0", "--stage", "nope", "--dry-run"],
        ["no stage named 'nope'", "['data']"])),
    Case("train-unknown-stage-name", lambda t: (
        ["train", recipe_file(t), "--stage", "nope"], ["no stage named 'nope'", "['data']"])),
    Case("resume-unknown-stage-name", lambda t: (
        ["resume", str(run_dir_with_resolved_recipe(t)), "--stage", "nope"], ["no stage named 'nope'"])),
    Case("data-extra-arguments", lambda t: (["data", recipe_file(t), "extra"], ["unexpected arguments ['extra']"])),
    # --- task files ----------------------------------------------------------------------------------------------
    Case("tasks-missing-required-field", lambda t: (
        data_with_tasks(t, '{"id": "t1", "kind": "qa", "answer": "x"}\n'),
        [str(t / "tasks.jsonl"), "line 1", "field 'goal'", "missing"])),
    Case("tasks-misspelled-field", lambda t: (
        data_with_tasks(t, task_line(anwser="x") + "\n"), [str(t / "tasks.jsonl"), "line 1", "field 'anwser'",
                                                             "did you mean 'answer'"])),
    Case("tasks-invalid-utf8", lambda t: (
        data_with_tasks(t, b'{"id": "t1", "kind": "qa", "goal": "caf\xe9"}\n'),
        [str(t / "tasks.jsonl"), "line 1", "not valid UTF-8"])),
    Case("tasks-enormous-line", lambda t: (
        data_with_tasks(t, task_line(goal="x" * (11 << 20)) + "\n"),
        [str(t / "tasks.jsonl"), "line 1", "longer than 10 MB"])),
    Case("tasks-empty-file", lambda t: (data_with_tasks(t, "\n\n"), [str(t / "tasks.jsonl"), "no tasks"])),
    Case("tasks-line-not-json", lambda t: (
        data_with_tasks(t, task_line() + "\n{oops\n"), [str(t / "tasks.jsonl"), "line 2"])),
    Case("tasks-unknown-kind", lambda t: (
        data_with_tasks(t, task_line(kind="poetry") + "\n"), [str(t / "tasks.jsonl"), "line 1", "field 'kind'"])),
    Case("tasks-duplicate-id", lambda t: (
        data_with_tasks(t, task_line() + "\n" + task_line() + "\n"),
        [str(t / "tasks.jsonl"), "line 2", "duplicate id 't1'"])),
    Case("tasks-facts-as-one-string", lambda t: (
        data_with_tasks(t, task_line(facts="It is in France.") + "\n"),
        [str(t / "tasks.jsonl"), "line 1", "field 'facts'"])),
    Case("tasks-facts-without-needs-clarification", lambda t: (
        data_with_tasks(t, task_line(facts=["It is in France."]) + "\n"),
        [str(t / "tasks.jsonl"), "line 1", "field 'needs_clarification'", "facts"])),
    Case("tasks-needs-clarification-without-facts", lambda t: (
        data_with_tasks(t, task_line(needs_clarification=True) + "\n"),
        [str(t / "tasks.jsonl"), "line 1", "field 'facts'", "clarification_override"])),
    Case("tasks-file-missing", lambda t: (
        ["data", recipe_file(t), "--tasks", str(t / "missing.jsonl")], [str(t / "missing.jsonl"), "does not exist"])),
    Case("tasks-unknown-set-name", lambda t: (
        ["data", recipe_file(t), "--tasks", "clarify-mat"], ["unknown task set 'clarify-mat'", "'clarify-math'"])),
    Case("tasks-unknown-split", lambda t: (eval_args(t, "--split", "nosuch"), ["unknown split 'nosuch'"])),
    # --- run directories, stores, checkpoints --------------------------------------------------------------------
    Case("resume-folder-that-is-not-a-run", lambda t: (["resume", str(t)], [str(t), "is not a run directory"])),
    Case("resume-folder-that-does-not-exist", lambda t: (["resume", str(t / "nope")], [str(t / "nope"),
                                                                                       "does not exist"])),
    Case("merge-folder-that-is-not-a-run", lambda t: (["data", "merge", str(t)], [str(t), "not a run directory"])),
    Case("merge-run-without-shards", lambda t: (
        ["data", "merge", str(run_dir_with_resolved_recipe(t))], ["store", "holds no shard files"])),
    Case("resume-resolved-recipe-corrupt", lambda t: (
        ["resume", str(t)], [raw_file(t, "recipe.resolved.yaml", "name: [unclosed\n"), "is not valid YAML"])),
    Case("train-into-a-run-started-with-another-model", lambda t: (
        ["train", recipe_file(t, model={"name": "smollm2-135m-instruct"})] if run_dir_with_resolved_recipe(
            t, started=("data",)) else [],
        [str(t / "run"), "model.name", "'tiny-random-smollm2' -> 'smollm2-135m-instruct'"])),
    Case("train-rerun-changes-a-finished-stage", lambda t: (
        ["train", recipe_file(t), "--set", "tasks.limit=3"] if finished_run(t) else [],
        [str(t / "run"), "finished stages ['data']", "tasks.limit (2 -> 3)", "--restart-from data"])),
    Case("train-restart-from-unknown-stage", lambda t: (
        ["train", recipe_file(t), "--restart-from", "dat"], ["--restart-from", "no stage named 'dat'", "['data']"])),
    Case("data-store-with-a-corrupt-line", lambda t: (
        ["data", recipe_file(t), "--tasks", tasks_file(t, task_line() + "\n")],
        [file_in(t / "run/data/store", "shard-0000-of-0001.jsonl", '{"conv_id": "t1", "turn": 0}\ngarbage\n'),
         "line 2 is not a store record"])),
    Case("eval-store-with-a-corrupt-line", lambda t: (
        eval_args(t), [file_in(t / "eval", "conversations.jsonl", '{"a": 1}\nxx\n{}\n'), "line 2 is not valid JSON"])),
    # --- eval models ---------------------------------------------------------------------------------------------
    Case("eval-model-folder-without-a-model", lambda t: (
        eval_args(t, model=str(t)), [str(t), "is not a model directory"])),
    Case("eval-model-config-not-json", lambda t: (
        eval_args(t, model=str(Path(file_in(t / "ckpt", "config.json", "{no")).parent)),
        [str(t / "ckpt"), "config.json", "not a valid JSON"])),
    Case("eval-model-checkpoint-without-weights", lambda t: (
        eval_args(t, model=model_dir_config_only(t)), [str(t / "checkpoint-3"), "cannot load the model"])),
    Case("eval-model-unknown-name", lambda t: (
        eval_args(t, model="smollm2-135m-instrct"), ["unknown model 'smollm2-135m-instrct'"])),
    Case("eval-openai-spec-without-model", lambda t: (
        eval_args(t, model="openai:@http://127.0.0.1:9/v1"), ["--model", "names no model"])),
    Case("eval-out-is-a-file", lambda t: (
        ["eval", "--model", "tiny-random-smollm2", "--tasks", "clarify-math", "--out", raw_file(t, "afile", "x")],
        ["--out", str(t / "afile"), "is a file"])),
    Case("eval-zero-runs", lambda t: (eval_args(t, "--runs", "0"), ["eval.runs", "at least 1"])),
    Case("eval-llm-simulator-without-model", lambda t: (
        eval_args(t, "--simulator", "llm"), ["--simulator llm needs --simulator-model"])),
    Case("recipe-empty-file", lambda t: (
        ["train", raw_file(t, "empty.yaml", "")], [str(t / "empty.yaml"), "is empty"])),
    Case("recipe-only-comments", lambda t: (
        ["data", raw_file(t, "empty.yaml", "# nothing yet\n")], [str(t / "empty.yaml"), "is empty"])),
    Case("train-recipe-without-stages", lambda t: (
        ["train", recipe_file(t, stages=[])], ["recipe 'bad' has no stages", "`stages:`"])),
    Case("launch-dry-run-with-a-missing-task-file", lambda t: (
        ["launch", "slurm", recipe_file(t), "--tasks", str(t / "missing.jsonl"), "--nodes", "1", "--gpus-per-node",
         "1", "--dry-run"], ["pre-flight found 1 problem", str(t / "missing.jsonl"), "does not exist"])),
    Case("launch-with-an-unset-endpoint-variable", lambda t: (
        ["launch", "slurm", recipe_file(t, simulator={"kind": "llm", "backend": {
            "kind": "openai", "model": "m", "base_url_env": "COLLAB_TEST_UNSET_URL"}}), "--nodes", "1",
         "--gpus-per-node", "1", "--dry-run"],
        ["simulator.backend.base_url_env", "COLLAB_TEST_UNSET_URL is not set", "export COLLAB_TEST_UNSET_URL"])),
    Case("plan-with-a-malformed-task-file", lambda t: (
        ["plan", recipe_file(t), "--tasks", tasks_file(t, "{oops\n")], ["pre-flight", "tasks.jsonl, line 1"])),
    Case("recipes-validate-with-a-malformed-task-file", lambda t: (
        ["recipes", "validate", recipe_file(t), "--tasks", tasks_file(t, task_line(kind="poetry") + "\n")],
        ["1 of 1 recipes are invalid"])),
    Case("recipes-validate-an-invalid-recipe", lambda t: (
        ["recipes", "validate", recipe_file(t, modle={})], ["1 of 1 recipes are invalid"])),
]


def test_an_empty_recipe_creates_no_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")

    code = main(["train", "empty.yaml"])

    assert code == 2
    assert "empty.yaml is empty" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def error_message(err: str) -> str:
    """The error paragraph; exactly one, and nothing after it."""
    assert err.count("collab: error: ") == 1, err[-3000:]
    return err[err.index("collab: error: "):]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_clear_error_naming_its_source_with_exit_code_2(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, named = case.build(tmp_path)

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    message = error_message(err)
    for part in named:
        assert part in message, f"{part!r} not in {message!r}"


def test_there_are_at_least_30_malformed_inputs() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


SUBPROCESS_CASES = ["recipe-unknown-top-level-key", "tasks-missing-required-field", "resume-folder-that-is-not-a-run",
                    "shard-index-out-of-range", "eval-model-config-not-json"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_the_collab_process_exits_2_without_a_traceback(case_id: str, tmp_path: Path) -> None:
    [case] = [c for c in CASES if c.id == case_id]
    argv, named = case.build(tmp_path)

    result = run_collab(*argv, env=cli_env(HF_HUB_OFFLINE="1"), timeout=120)

    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = error_message(result.stderr)
    assert all(part in message for part in named), message


def test_the_collab_script_exits_2_on_a_bad_recipe(tmp_path: Path) -> None:
    import subprocess

    script = Path(sys.executable).with_name("collab")
    result = subprocess.run([str(script), "data", recipe_file(tmp_path, modle={})], capture_output=True, text=True,
                            env=cli_env(), timeout=120, check=False)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown key 'modle'" in error_message(result.stderr)
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["modle"] == {}
