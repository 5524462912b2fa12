"""Helpers shared by the benchmarks: timing and a description of the machine."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    """The fastest of `repeats` runs (the least disturbed by other load) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
