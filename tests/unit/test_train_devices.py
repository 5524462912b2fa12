"""The MR reward's worker thread drives its rank's GPU, not GPU 0.

No GPU here: torch.cuda is replaced at its boundary by a per-thread current device, as CUDA keeps it (a new thread
starts on device 0). Everything above it is the real call path: asyncio.to_thread, as GRPO awaits an async reward,
then the colocated policy's session.
"""

from __future__ import annotations

import asyncio
import threading
import types

import pytest
import torch

from collab.train import online_policy
from collab.train.devices import bind_rank_device, rank_device_index


class PerThreadCuda:
    """CUDA's current device: thread-local, 0 in a new thread."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.calls: list[tuple[str, int]] = []

    def current_device(self) -> int:
        return getattr(self.local, "device", 0)

    def set_device(self, index: int) -> None:
        self.calls.append((threading.current_thread().name, index))
        self.local.device = index


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> PerThreadCuda:
    fake = PerThreadCuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", fake.current_device)
    monkeypatch.setattr(torch.cuda, "set_device", fake.set_device)
    return fake


def test_the_rank_comes_from_the_trainer_device_else_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert rank_device_index(torch.device("cuda", 2)) == 2
    assert rank_device_index(torch.device("cpu")) == 5
    monkeypatch.delenv("LOCAL_RANK")
    assert rank_device_index(None) is None


def test_without_cuda_nothing_is_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bind_rank_device() is None


def test_colocated_session_in_the_reward_worker_thread_sees_its_rank_device(
    cuda: PerThreadCuda, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")
    # The policy as GRPO's trainer gives it on rank 3; its vLLM engine is the one double (no vLLM on CPU).
    engine = types.SimpleNamespace()
    monkeypatch.setattr(online_policy, "trainer_engine", lambda trainer: engine)
    import collab.backends.vllm_backend as vllm_backend
    monkeypatch.setattr(vllm_backend, "_require_vllm", lambda: types.SimpleNamespace())
    trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(device=torch.device("cpu")))
    policy = online_policy.VLLMColocatePolicy(trainer, name="policy")

    def score() -> tuple[int, str]:  # what the reward function does in its worker thread
        with policy.session(step=7) as backend:
            assert backend.identity == "vllm:policy@7"
            return torch.cuda.current_device(), threading.current_thread().name

    async def reward() -> tuple[int, str]:
        return await asyncio.to_thread(score)

    device, thread = asyncio.run(reward())
    assert device == 3 and thread != threading.main_thread().name
    assert cuda.calls == [(thread, 3)]
    assert torch.cuda.current_device() == 0  # the main thread's device was not touched
