"""Test helper: start `collab train` as a real process, and preempt it once a given checkpoint is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from collab.run.checkpoints import is_complete_checkpoint

REPO = Path(__file__).resolve().parent.parent


def train_until_checkpoint_then_preempt(recipe: Path, checkpoint: Path, *, timeout_s: float = 180) -> tuple[int, str]:
    """Run `collab train RECIPE`, send SIGUSR1 (Slurm's warning) when `checkpoint` is complete, and return the
    exit code and output. W&B follows the recipe (WANDB_MODE is removed from the environment)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.Popen([sys.executable, "-m", "collab.cli", "train", str(recipe)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not is_complete_checkpoint(checkpoint):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"no {checkpoint.name} within {timeout_s} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output
