"""The GPUs this process sees, and the CUDA device of a rank in every thread that drives a GPU for it.

CUDA's current device belongs to the thread: a new thread starts on device 0, whatever the process's main thread
chose. GRPO and RLOO await the MR reward in a worker thread (asyncio.to_thread), so without this every rank's
rollouts would drive GPU 0 (its colocated vLLM engine, its live model's generate calls), which collides with rank 0
and fails with device mismatches. Each policy session binds the thread to its rank's device first.
"""

from __future__ import annotations

import os
from typing import Any


def rank_device_index(device: Any = None) -> int | None:
    """The CUDA index of this rank: the trainer's device when it names one, else LOCAL_RANK (torchrun, accelerate)."""
    index = getattr(device, "index", None)
    if getattr(device, "type", None) == "cuda" and index is not None:
        return int(index)
    local = os.environ.get("LOCAL_RANK", "")
    return int(local) if local.isdigit() else None


def bind_rank_device(device: Any = None) -> int | None:
    """Make the calling thread's current CUDA device this rank's; returns its index (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = rank_device_index(device)
    if index is None:
        return None
    if torch.cuda.current_device() != index:
        torch.cuda.set_device(index)
    return index


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def has_gpu() -> bool:
    """Whether this process sees a CUDA device (the trainer arguments turn to CPU training without one)."""
    return visible_gpus() > 0
