"""Reuse of attention key/value states across `generate` calls of the hf backend (prefix caching).

A multi-turn rollout asks the policy for turn t+1 with a prompt that extends turn t's prompt and reply, and the S
rollouts of one candidate start from the same prompt. Without reuse every call prefills its whole prompt again, and
on a CPU that prefill is most of the cost of short turns. The store keeps the key/value states of recent sequences
(prompt plus generated reply) and serves, for a new prompt, the longest stored prefix of it; the backend then
prefills only the rest. vLLM does the same on GPUs (automatic prefix caching); this is the transformers equivalent.

The states belong to one set of weights: the backend clears the store whenever its revision changes (the policy
being trained calls `set_revision` after each optimizer step). Matching is on token ids, so a reply whose
re-tokenisation inside the next prompt differs from the generated ids simply matches a shorter prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

# Per layer (keys, values), each [kv_heads, tokens, head_dim].
LayerStates = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class PrefixStats:
    """Prompt tokens served from the store, prompt tokens prefilled, and padding computed beside them in prefill
    forwards (row-tokens that were no prompt token), over the backend's life."""

    reused_tokens: int = 0
    prefilled_tokens: int = 0
    padded_tokens: int = 0
    evictions: int = 0


@dataclass
class _Entry:
    tokens: np.ndarray
    layers: LayerStates
    nbytes: int


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    """Number of leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    mismatch = np.flatnonzero(a[:n] != b[:n])
    return int(mismatch[0]) if len(mismatch) else n


class PrefixKVStore:
    """Least-recently-used key/value states of token sequences, bounded by `max_bytes`.

    An entry whose tokens are a prefix of a newer entry's is dropped when the newer one arrives: the newer one
    serves every prompt the older one could.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = PrefixStats()
        self.bytes_per_token: float | None = None  # known from the first entry
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def longest_prefix(self, tokens: list[int], *, limit: int) -> tuple[int, LayerStates | None]:
        """The longest stored prefix of `tokens`, at most `limit` tokens long, and its layer states (None if none)."""
        query = np.asarray(tokens, dtype=np.int64)
        best_length, best_key = 0, None
        for key, entry in self._entries.items():
            length = min(common_prefix_length(entry.tokens, query), limit)
            if length > best_length:
                best_length, best_key = length, key
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        return best_length, self._entries[best_key].layers

    def add(self, tokens: list[int], layers: LayerStates) -> None:
        """Store the states of `tokens` (each layer's tensors hold exactly len(tokens) positions)."""
        array = np.asarray(tokens, dtype=np.int64)
        key = array.tobytes()
        if key in self._entries or not len(array):
            return
        for old_key, entry in list(self._entries.items()):
            if len(entry.tokens) <= len(array) and common_prefix_length(entry.tokens, array) == len(entry.tokens):
                self._remove(old_key)
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        self.bytes_per_token = nbytes / len(array)
        if nbytes > self.max_bytes:
            return
        self._entries[key] = _Entry(array, layers, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
            self.stats.evictions += 1

    def _remove(self, key: bytes) -> None:
        self.bytes -= self._entries.pop(key).nbytes
