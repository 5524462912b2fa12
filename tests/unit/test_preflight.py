"""Pre-flight: what the stages need is checked before a submission, every problem reported at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from collab.cli import main
from collab.config import validate_recipe
from collab.preflight import environment_problems, preflight

SIMULATOR = {"kind": "llm", "backend": {"kind": "openai", "model": "gpt-4o-mini",
                                        "base_url_env": "COLLAB_SIMULATOR_BASE_URL",
                                        "api_key_env": "COLLAB_SIMULATOR_API_KEY"}}
HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def recipe(tmp_path: Path, **changes: Any):  # noqa: ANN201
    raw = {"name": "pf", "output_dir": str(tmp_path / "run"), "model": {"name": "tiny-random-smollm2"},
           "tasks": {"name": "clarify-math", "limit": 2}, "stages": [{"kind": "data"}], **changes}
    return validate_recipe(raw)


def test_unset_endpoint_and_key_variables_are_each_named(tmp_path: Path) -> None:
    problems = environment_problems(recipe(tmp_path, simulator=SIMULATOR), environ={})

    assert [p.where for p in problems] == ["simulator.backend.base_url_env", "simulator.backend.api_key_env"]
    assert "COLLAB_SIMULATOR_BASE_URL is not set" in problems[0].message
    assert "export COLLAB_SIMULATOR_API_KEY=" in problems[1].fix


def test_set_variables_pass_and_a_loopback_endpoint_needs_no_key(tmp_path: Path) -> None:
    r = recipe(tmp_path, simulator=SIMULATOR)
    assert environment_problems(r, environ={"COLLAB_SIMULATOR_BASE_URL": "https://api.example/v1",
                                            "COLLAB_SIMULATOR_API_KEY": "k"}) == []
    assert environment_problems(r, environ={"COLLAB_SIMULATOR_BASE_URL": "http://127.0.0.1:8000/v1"}) == []


def test_training_stages_need_no_endpoints(tmp_path: Path) -> None:
    r = recipe(tmp_path, simulator=SIMULATOR, stages=[{"kind": "data"}, {"kind": "sft", "data_from": "data"}])
    assert environment_problems(r, ["sft"], environ={}) == []


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_a_vllm_backend_and_use_vllm_need_vllm_importable(tmp_path: Path) -> None:
    r = recipe(tmp_path, policy={"kind": "vllm", "max_model_len": 4096},
               stages=[{"kind": "data"}, {"kind": "grpo", "init_from": None, "trainer": {"use_vllm": True}}])
    problems = environment_problems(r, environ={})
    assert [p.where for p in problems] == ["policy.kind", "stages.1 (stage 'grpo').trainer.use_vllm"]


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed here")
def test_a_deepspeed_config_passes_where_deepspeed_is_importable(tmp_path: Path) -> None:
    r = recipe(tmp_path, stages=[{"kind": "data"}, {"kind": "dpo", "data_from": "data", "accelerate_config": "zero3"}])
    assert environment_problems(r, environ={}) == []


def test_a_missing_accelerate_config_is_named(tmp_path: Path) -> None:
    r = recipe(tmp_path, stages=[{"kind": "data"}, {"kind": "dpo", "data_from": "data", "accelerate_config": "zer3"}])
    [problem] = environment_problems(r, environ={})
    assert problem.where == "stages.1 (stage 'dpo').accelerate_config" and "'zer3' does not exist" in problem.message


def test_task_files_are_loaded_and_their_errors_reported_with_the_others(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "t1", "kind": "qa", "goal": "g", "answer": "x", "facts": ["f"]}\n')
    r = recipe(tmp_path, tasks={"name": str(tasks)}, simulator=SIMULATOR)

    problems = preflight(r, environ={})

    assert len(problems) == 3
    assert f"{tasks}, line 1: field 'needs_clarification'" in problems[0].message


def test_launch_dry_run_reports_every_problem_at_once_and_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLLAB_SIMULATOR_BASE_URL", raising=False)
    monkeypatch.delenv("COLLAB_SIMULATOR_API_KEY", raising=False)
    path = tmp_path / "r.yaml"
    path.write_text(f"name: pf\noutput_dir: {tmp_path / 'run'}\nmodel: {{name: tiny-random-smollm2}}\n"
                    "simulator: {kind: llm, backend: {kind: openai, model: m, base_url_env: COLLAB_SIMULATOR_BASE_URL, "
                    "api_key_env: COLLAB_SIMULATOR_API_KEY}}\nstages: [{kind: data}]\n")

    code = main(["launch", "slurm", str(path), "--tasks", str(tmp_path / "missing.jsonl"), "--nodes", "1",
                 "--gpus-per-node", "1", "--dry-run"])

    captured = capsys.readouterr()
    assert code == 2 and "sbatch" not in captured.out
    assert "pre-flight found 3 problems" in captured.err
    assert "missing.jsonl' does not exist" in captured.err and "COLLAB_SIMULATOR_API_KEY" in captured.err


def test_plan_warns_about_the_environment_but_still_plans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLLAB_SIMULATOR_BASE_URL", raising=False)
    path = tmp_path / "r.yaml"
    path.write_text(f"name: pf\noutput_dir: {tmp_path / 'run'}\nmodel: {{name: tiny-random-smollm2}}\n"
                    "tasks: {name: clarify-math, limit: 4}\n"
                    "simulator: {kind: llm, backend: {kind: openai, model: m, base_url_env: COLLAB_SIMULATOR_BASE_URL,"
                    " api_key_env: COLLAB_SIMULATOR_API_KEY}}\nstages: [{kind: data}]\n")

    assert main(["plan", str(path)]) == 0

    captured = capsys.readouterr()
    assert "collab: warning:" in captured.err and "COLLAB_SIMULATOR_BASE_URL is not set" in captured.err
    assert "stage 'data'" in captured.out
