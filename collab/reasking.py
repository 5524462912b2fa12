"""Structured generation with bounded, batched re-asks.

LLM users and LLM judges must answer in a strict format. When a reply is unusable, the item is asked again with its
rejected reply and the reason appended, a bounded number of times. Every round is ONE batched backend call holding
only the items still pending, and each round draws a fresh seed derived stably from the item's seed (round 0 keeps
the caller's seed, so first attempts share the request cache across runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from collab.backends.base import Backend, Request
from collab.chat import Conversation, Generation, SamplingParams, message

T = TypeVar("T")

# Turns a reply into a value, or (None, reason) when it must be asked again.
Interpret = Callable[[int, Generation], "tuple[T | None, str | None]"]


@dataclass
class ReaskOutcome(Generic[T]):
    """Values of the items that succeeded, the last reason of those that never did, and the effort spent."""

    values: dict[int, T] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    reasks: int = 0
    calls: int = 0


def round_seed(seed: int, round_index: int, salt: str) -> int:
    """Round 0 keeps `seed`; later rounds get a stable 31-bit seed (no salted hash(), any backend accepts it)."""
    if round_index == 0:
        return seed
    digest = hashlib.sha256(f"{salt}:{seed}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def reask_prompt(prompt: Conversation, bad_output: str, note: str) -> Conversation:
    """The original prompt plus the rejected output and a note saying why, so the retry can correct itself."""
    return [*prompt, message("assistant", bad_output[:2000] or "(empty)"), message("user", note)]


def generate_with_reasks(
    backend: Backend,
    prompts: dict[int, Conversation],
    seeds: dict[int, int],
    params: SamplingParams,
    interpret: Interpret[T],
    *,
    max_reasks: int,
    reask_note: Callable[[str], str],
    salt: str,
) -> ReaskOutcome[T]:
    outcome: ReaskOutcome[T] = ReaskOutcome()
    pending = dict(prompts)
    last_error: dict[int, str] = {}
    for round_index in range(max_reasks + 1):
        if not pending:
            break
        order = sorted(pending)
        if round_index:
            outcome.reasks += len(order)
        requests = [Request(pending[i], params.with_(seed=round_seed(seeds[i], round_index, salt), n=1)) for i in order]
        replies = backend.generate_requests(requests)
        outcome.calls += 1
        retry: dict[int, Conversation] = {}
        for i, gen in zip(order, replies):
            value, error = interpret(i, gen)
            if value is not None:
                outcome.values[i] = value
                outcome.attempts[i] = round_index + 1
                continue
            last_error[i] = error or "rejected"
            retry[i] = reask_prompt(prompts[i], gen.text, reask_note(last_error[i]))
        pending = retry
    outcome.failures = {i: last_error[i] for i in pending}
    return outcome
