"""API keys come only from the environment and are never written: not into the run directory (resolved recipe,
store, summaries, datasets, request cache), not into the command's output, not into tracked configs."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from collab.config import Recipe
from tests.fault_server import FaultConfig, FaultServer
from tests.reliability.conftest import REPO, cli_env, data_recipe, run_collab, write_qa_tasks, write_yaml

KEY_ENV = "COLLAB_RELIABILITY_TEST_KEY"


@pytest.fixture
def key() -> str:
    """A fresh key-shaped secret, made at run time so it cannot be in any file beforehand."""
    return "sk-test-" + secrets.token_hex(20)


@pytest.fixture
def keyed_server(key: str) -> Iterator[FaultServer]:
    with FaultServer(FaultConfig(required_api_key=key)) as server:
        yield server


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under `root` whose bytes contain `needle` (text, SQLite pages and WAL, Arrow files alike)."""
    data = needle.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and data in p.read_bytes())


def run_data(tmp_path: Path, server: FaultServer, key: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    run_dir = tmp_path / "run"
    recipe = write_yaml(tmp_path / "recipe.yaml", data_recipe(
        run_dir, server.base_url, write_qa_tasks(tmp_path / "qa.jsonl", 4),
        policy={"api_key_env": KEY_ENV, "max_retries": 0}))
    result = run_collab("data", str(recipe), env=cli_env(**{KEY_ENV: key}), timeout=300)
    return run_dir, result


def test_a_key_given_by_environment_reaches_the_server_and_is_written_nowhere(
    tmp_path: Path, keyed_server: FaultServer, key: str
) -> None:
    run_dir, result = run_data(tmp_path, keyed_server, key)

    assert result.returncode == 0, result.stderr[-3000:]
    stats = keyed_server.stats
    assert stats.requests > 0 and set(stats.authorizations) == {f"Bearer {key}"}
    assert stats.served["401"] == 0 and stats.served["ok"] == stats.requests
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert {"recipe.resolved.yaml", "cache.sqlite", "data/DONE", "data/store/shard-0000-of-0001.jsonl",
            "data/store/shard-0000-of-0001.summary.json"} <= set(written)
    assert files_containing(run_dir, key) == []
    assert files_containing(tmp_path, key) == []  # the recipe and task file too
    assert key not in result.stdout and key not in result.stderr
    resolved = (run_dir / "recipe.resolved.yaml").read_text()
    assert f"api_key_env: {KEY_ENV}" in resolved and "api_key:" not in resolved


def test_a_rejected_key_is_not_echoed_into_errors_or_the_run_directory(
    tmp_path: Path, keyed_server: FaultServer, key: str
) -> None:
    wrong = "sk-test-" + secrets.token_hex(20)

    run_dir, result = run_data(tmp_path, keyed_server, wrong)

    assert result.returncode == 0, result.stderr[-3000:]  # the calls fail, are counted; the run completes
    assert keyed_server.stats.served["401"] == keyed_server.stats.requests > 0
    summary = json.loads((run_dir / "data" / "store" / "shard-0000-of-0001.summary.json").read_text())
    assert summary["policy"]["failures"] == keyed_server.stats.requests
    assert summary["policy"]["failure_reasons"] == {"AuthenticationError": keyed_server.stats.requests}
    assert files_containing(tmp_path, wrong) == [] and files_containing(tmp_path, key) == []
    assert wrong not in result.stdout + result.stderr


def test_a_missing_key_is_a_clear_error_naming_the_variable(tmp_path: Path) -> None:
    recipe = write_yaml(tmp_path / "recipe.yaml", data_recipe(
        tmp_path / "run", "https://api.example.invalid/v1", write_qa_tasks(tmp_path / "qa.jsonl", 2),
        policy={"api_key_env": KEY_ENV}))
    env = cli_env()
    env.pop(KEY_ENV, None)

    result = run_collab("data", str(recipe), env=env, timeout=120)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"export {KEY_ENV}=" in result.stderr


def secret_like_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every field path of the recipe schema, recursively, whose name looks like it could hold a secret."""
    for name, field in model.model_fields.items():
        if re.search(r"(^|_)(key|apikey|token|secret|password|credentials?)$", name):
            yield prefix + name
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from secret_like_fields(inner, f"{prefix}{name}.")


def test_the_recipe_schema_names_key_variables_never_keys() -> None:
    from collab.config import BackendConfig

    assert list(secret_like_fields(Recipe)) == []
    assert "api_key_env" in BackendConfig.model_fields and "api_key" not in BackendConfig.model_fields


KEY_SHAPES = [
    r"sk-[A-Za-z0-9_-]{20,}",  # OpenAI and compatible
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"AKIA[0-9A-Z]{16}",  # AWS
]
ASSIGNMENT = r"(api_key|apikey|token|secret|password)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9_\-]{12,}"
CONFIGS = ["*.yaml", "*.yml", "*.toml", "*.json", "*.cfg", "*.ini", "*.env", "*.slurm", "*.sh", "Makefile", "*.md"]


def git_grep(pattern: str, *pathspecs: str) -> str:
    found = subprocess.run(["git", "grep", "-n", "-I", "-i", "-E", pattern, "--", *pathspecs], cwd=REPO,
                           capture_output=True, text=True, timeout=60, check=False)
    assert found.returncode in (0, 1), found.stderr  # 1: nothing found
    return found.stdout


def test_tracked_configs_and_code_hold_no_key_like_strings() -> None:
    # Test fixtures hold fake keys on purpose (tests/); everything else, code included, must hold none.
    assert git_grep("|".join(f"({p})" for p in KEY_SHAPES), ".", ":!tests") == ""
    assert git_grep(ASSIGNMENT, *CONFIGS) == ""
    tracked = subprocess.run(["git", "ls-files", *CONFIGS], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert any(p.startswith("recipes/") for p in tracked) and any(p.startswith("accelerate_configs/") for p in tracked)
