"""The pins of pyproject.toml resolve against the package index, for the core and for each extra.

`pip install --dry-run --ignore-installed --report` runs pip's real resolver as on a fresh machine (the installed
packages neither help nor hide a conflict) and reads only metadata, so the multi-GB torch and vLLM wheels are not
downloaded. A conflict between our pins and an extra's own requirements (vllm 0.33 caps transformers below 5.21)
fails here, in CI, instead of at `pip install -e '.[vllm]'` on a cluster.

Each case is one install a user makes: the CPU set-up of `make venv` (torch 2.13.0 first, then the core), the test
set-up of `make test` (dev and server extras), and a GPU node's `.[vllm]`, which brings its own torch (2.14.0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.pins

# Errors pip prints when it cannot reach an index at all; anything else that fails is a real resolution failure.
UNREACHABLE = ("Temporary failure in name resolution", "NewConnectionError", "Max retries exceeded",
               "Network is unreachable", "Connection refused")


def resolve(tmp_path: Path, *requirements: str) -> dict[str, str]:
    """{normalised name: version} of what pip would install for `requirements` on an empty environment."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), *requirements],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        if any(marker in done.stderr for marker in UNREACHABLE) and "ResolutionImpossible" not in done.stderr:
            pytest.skip(f"the package index is unreachable from here: {done.stderr.strip().splitlines()[-1]}")
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line or "requires" in line
                  or "depends on" in line]
        pytest.fail(f"pip cannot resolve {' '.join(requirements)}:\n" + "\n".join(errors[-30:]))
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in installs}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pinned(name: str, extra: str | None = None) -> Requirement:
    requirements = project()["optional-dependencies"][extra] if extra else project()["dependencies"]
    [requirement] = [Requirement(r) for r in requirements if Requirement(r).name == name]
    return requirement


def test_core_resolves_on_the_cpu_torch_that_make_venv_installs(tmp_path: Path) -> None:
    versions = resolve(tmp_path, "torch==2.13.0", ".")
    assert Version(versions["torch"]).release == (2, 13, 0)  # "2.13.0+cpu" from the local wheels
    assert versions["transformers"] in pinned("transformers").specifier
    assert versions["trl"] in pinned("trl").specifier


def test_vllm_extra_resolves_with_its_own_torch(tmp_path: Path) -> None:
    versions = resolve(tmp_path, ".[vllm]")
    assert versions["vllm"] in pinned("vllm", "vllm").specifier
    assert versions["vllm"].startswith("0.33."), "collab's vLLM calls are pinned to the 0.33 API (docs/cluster.md)"
    # The core's transformers range must overlap vLLM's (>=5.16.1,<5.21 for 0.33): the resolver picked from both.
    assert versions["transformers"] in pinned("transformers").specifier
    assert versions["trl"] in pinned("trl").specifier


def test_test_extras_resolve_as_make_test_installs_them(tmp_path: Path) -> None:
    versions = resolve(tmp_path, "torch==2.13.0", ".[dev,server]")
    assert versions["llama-cpp-python"] in Requirement(project()["optional-dependencies"]["server"][0]).specifier
    assert "pytest" in versions


def test_torch_is_not_a_core_requirement() -> None:
    # A bare torch requirement makes pip pick a multi-GB CUDA build on CPU machines; each machine installs its own.
    assert "torch" not in {Requirement(r).name for r in project()["dependencies"]}
