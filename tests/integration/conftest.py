"""Environment of every integration test that launches a trainer."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def training_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited W&B mode or accelerate config, and one OpenMP thread per trainer: on a 2-core machine shared
    with other jobs, two spinning threads per process make each step ten times slower, while one is steady (and the
    flag exercises the cluster-flags path of the launch command)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("COLLAB_ACCELERATE_CONFIG", raising=False)
    monkeypatch.setenv("COLLAB_ACCELERATE_ARGS", "--num_cpu_threads_per_process 1")
