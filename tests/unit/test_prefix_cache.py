"""Prefix caching in the hf backend: attention states of earlier prompts and replies are reused, and that changes
what is computed, never what is generated."""

from __future__ import annotations

import numpy as np
import torch

from collab.backends.hf import HFBackend
from collab.backends.prefix_cache import PrefixKVStore, common_prefix_length
from collab.chat import SamplingParams

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


def states(length: int, value: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((2, length, 4), value), torch.full((2, length, 4), -value))]


def with_store(backend: HFBackend, megabytes: int = 64) -> HFBackend:
    return HFBackend(backend.model, backend.tokenizer, name=backend.name, prefix_cache_bytes=megabytes * 2**20)


def conversations(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Tom has {i} boxes of apples. How many apples?"}] for i in range(count)]


def test_common_prefix_length_counts_leading_matches() -> None:
    a = torch.tensor([1, 2, 3, 4]).numpy()
    assert common_prefix_length(a, torch.tensor([1, 2, 9]).numpy()) == 2
    assert common_prefix_length(a, a[:2]) == 2
    assert common_prefix_length(a, torch.tensor([7]).numpy()) == 0


def test_store_serves_the_longest_stored_prefix_within_the_limit() -> None:
    store = PrefixKVStore(2**20)
    store.add([1, 2, 3], states(3))
    store.add([1, 5, 6, 7], states(4, 2.0))
    length, layers = store.longest_prefix([1, 5, 6, 7, 8], limit=4)
    assert length == 4 and layers is not None and layers[0][0][0, 0, 0].item() == 2.0
    assert store.longest_prefix([1, 2, 3, 4], limit=2)[0] == 2
    assert store.longest_prefix([9, 9], limit=1) == (0, None)


def test_an_entry_extended_by_a_newer_one_is_dropped() -> None:
    store = PrefixKVStore(2**20)
    store.add([1, 2], states(2))
    store.add([1, 2, 3, 4], states(4))
    assert len(store) == 1 and store.bytes == 4 * 2 * 2 * 4 * 4


def test_store_evicts_the_least_recently_used_entry_past_its_budget() -> None:
    one_entry = 3 * 2 * 2 * 4 * 4  # 3 tokens x 2 heads x 4 dims x 4 bytes, keys and values
    store = PrefixKVStore(2 * one_entry)
    store.add([1, 1, 1], states(3))
    store.add([2, 2, 2], states(3))
    store.longest_prefix([1, 1, 1], limit=3)  # touching it makes [2, 2, 2] the oldest
    store.add([3, 3, 3], states(3))
    assert store.longest_prefix([2, 2, 2], limit=3) == (0, None)
    assert store.longest_prefix([1, 1, 1], limit=3)[0] == 3 and store.stats.evictions == 1


def test_next_turn_reuses_the_previous_prompt_and_reply_and_generates_the_same_text(tiny_backend: HFBackend) -> None:
    cached = with_store(tiny_backend)
    convs = conversations(4)
    for _ in range(3):
        plain = [g for [g] in tiny_backend.generate(convs, GREEDY)]
        reused = [g for [g] in cached.generate(convs, GREEDY)]
        assert [g.text for g in reused] == [g.text for g in plain]
        assert [g.prompt_tokens for g in reused] == [g.prompt_tokens for g in plain]
        convs = [c + [{"role": "assistant", "content": g.text}, {"role": "user", "content": "Maybe 4?"}]
                 for c, g in zip(convs, plain)]
    stats = cached.prefix_store.stats
    assert stats.reused_tokens > stats.prefilled_tokens  # the third turn prefills only what is new


def test_shared_prompts_and_shared_prefixes_are_prefilled_once(tiny_backend: HFBackend) -> None:
    cached = with_store(tiny_backend)
    three = GREEDY.with_(n=3)  # three requests per prompt, like S=3 rollouts of one candidate
    plain = tiny_backend.generate(conversations(2), three)
    reused = cached.generate(conversations(2), three)
    assert [[g.text for g in gens] for gens in reused] == [[g.text for g in gens] for gens in plain]
    first, second = (cached.encode_messages(p) for p in conversations(2))
    shared = common_prefix_length(np.asarray(first), np.asarray(second))  # the system prompt and "Tom has "
    assert shared >= 16
    # The shared prefix once, then the rest of each prompt but its last token once, then that token per request.
    rests = len(first) - 1 - shared + len(second) - 1 - shared
    assert cached.prefix_store.stats.prefilled_tokens == shared + rests + 6
    assert cached.prefix_store.stats.padded_tokens == 0


def test_a_batch_of_different_lengths_computes_almost_no_padding(tiny_backend: HFBackend) -> None:
    cached = with_store(tiny_backend)
    convs = [[{"role": "user", "content": "Hi. " * (1 + 12 * i) + f"Question {i}?"}] for i in range(6)]
    plain = [g.text for [g] in tiny_backend.generate(convs, GREEDY)]
    assert [g.text for [g] in cached.generate(convs, GREEDY)] == plain
    stats = cached.prefix_store.stats
    assert stats.padded_tokens <= 0.25 * stats.prefilled_tokens


def test_new_weights_revision_empties_the_store(tiny_backend: HFBackend) -> None:
    cached = with_store(tiny_backend)
    cached.generate(conversations(2), GREEDY)
    assert len(cached.prefix_store) == 2
    cached.set_revision(1)
    assert len(cached.prefix_store) == 0
