"""Seeds derived from names: the one way collab turns (seed, task id, turn, ...) into an integer seed."""

from __future__ import annotations

import zlib


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from `parts`, the same in every process and on every platform.

    Python's hash() of a str changes with every interpreter (PYTHONHASHSEED), so it would give each process of a
    run other simulated-user draws; CRC-32 of the parts joined by a unit separator does not. 32 bits because the
    seed reaches backends (vLLM, OpenAI-compatible endpoints) that take a signed 64-bit integer at most, after
    rollout offsets are added to it.
    """
    return zlib.crc32("\x1f".join(map(str, parts)).encode())
