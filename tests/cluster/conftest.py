"""A real one-node Slurm cluster for the cluster tier, installed and started by the tests themselves.

CI machines are fresh, so the session fixture runs `scripts/slurm_local.sh install` (apt-get, quick once done) and
`start` with a private state dir and free ports: each test session gets its own cluster, and concurrent sessions
on one machine do not share jobs or daemons. Teardown stops exactly the daemons this session started (by their
recorded pids), also when tests fail or the start itself fails half-way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import SCRIPT, SlurmCluster, free_port_pair


def _script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Install Slurm if needed, start a private one-node cluster, yield it, stop its daemons afterwards."""
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        pytest.skip("the cluster tier installs slurm-wlm with apt-get: run it as root, or install slurm-wlm and munge")
    state_dir = Path(tempfile.mkdtemp(prefix="collab-slurm-"))
    # Jobs inherit this environment (sbatch --export=ALL): the venv's bin first, as for a user who activated it.
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {**os.environ, "PATH": path, "SLURM_LOCAL_DIR": str(state_dir), "SLURM_LOCAL_PORT": str(free_port_pair()),
           "SLURM_LOCAL_GRACE_S": "5", "SLURM_CONF": str(state_dir / "etc" / "slurm.conf")}
    env.pop("SLURM_JOB_ID", None)  # tests started inside a Slurm job must not look like a job step
    installed = _script("install", env)
    if installed.returncode != 0:
        pytest.fail(f"scripts/slurm_local.sh install failed:\n{installed.stderr}{installed.stdout}")
    try:
        started = _script("start", env)
        if started.returncode != 0:
            pytest.fail(f"scripts/slurm_local.sh start failed:\n{started.stderr}{started.stdout}")
        yield SlurmCluster(state_dir, env)
    finally:
        stopped = _script("stop", env)
        if stopped.returncode == 0:
            shutil.rmtree(state_dir, ignore_errors=True)
        else:  # keep the logs for a look
            print(f"slurm_local.sh stop failed ({stopped.stderr}); state and logs left in {state_dir}")
