"""Client-side helpers of the test cluster: its environment, sbatch, scontrol, and the fake `collab` on PATH."""

from __future__ import annotations

import argparse
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
FAKE_COLLAB = Path(__file__).resolve().parent / "fake_collab.py"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}  # PREEMPTED is not: it requeues


def free_port_pair() -> int:
    """A port p with p and p+1 free (slurmctld and slurmd), below the kernel's ephemeral range."""
    for _ in range(100):
        port = random.randrange(10000, 19998)
        try:
            for candidate in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports in 10000-19999")


@dataclass
class SlurmCluster:
    """Client side of the test cluster: its environment and small helpers over sbatch and scontrol."""

    state_dir: Path
    env: dict[str, str]

    def run(self, *argv: str, env: dict[str, str] | None = None, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), env=env or self.env, capture_output=True, text=True, cwd=cwd or ROOT,
                              timeout=60, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr}{done.stdout}")
        return done

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        out = self.run("sbatch", "--parsable", *args, env=env, cwd=cwd).stdout.strip()
        return out.split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job -o` as dicts (an array job id gives one dict per task); [] once Slurm forgot it."""
        done = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in done.stdout.splitlines() if line.strip()]

    def state(self, job_id: str) -> str:
        jobs = self.jobs(job_id)
        return jobs[0]["JobState"] if jobs else "UNKNOWN"

    def wait_final(self, job_id: str, timeout: float = 120) -> list[dict[str, str]]:
        """Wait until the job (every task of an array) has reached a final state; returns its records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs(job_id)
            if jobs and all(j["JobState"] in FINAL_STATES for j in jobs):
                return jobs
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not finished after {timeout} s: {self.jobs(job_id)}")

    def fake_collab_env(self, bin_dir: Path, **extra: str) -> dict[str, str]:
        """The cluster env with tests/cluster/fake_collab.py first on PATH as `collab` (see that file)."""
        bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = bin_dir / "collab"
        wrapper.write_text(f'#!/bin/sh\nexec "{shutil.which("python3")}" "{FAKE_COLLAB}" "$@"\n')
        wrapper.chmod(0o755)
        return {**self.env, "PATH": f"{bin_dir}:{self.env['PATH']}", **extra}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def collab_has_commands(*names: str) -> bool:
    """Whether this collab's CLI has these subcommands (the real-stage tests wait for them)."""
    from collab.cli import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return all(name in sub.choices for name in names)
