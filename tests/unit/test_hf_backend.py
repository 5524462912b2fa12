"""The hf backend: batched, left-padded, grouped by length, cached, and faithful to model.generate."""

from __future__ import annotations

from pathlib import Path

import torch

from collab.backends.base import Request
from collab.backends.cache import RequestCache
from collab.backends.hf import HFBackend
from collab.chat import SamplingParams

PROMPTS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tom has 3 boxes of apples and each box holds a number of apples. How many?"}],
    [{"role": "user", "content": "Write a haiku."}, {"role": "assistant", "content": "Sure."},
     {"role": "user", "content": "About rain, please."}],
]
GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


def direct_greedy(backend: HFBackend, messages: list, max_new: int) -> list[int]:
    ids = backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = backend.model.generate(**ids, max_new_tokens=max_new, do_sample=False, top_k=None,
                                 pad_token_id=backend.tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_backend: HFBackend) -> None:
    batched = tiny_backend.generate(PROMPTS, GREEDY)
    for prompt, [gen] in zip(PROMPTS, batched):
        alone = tiny_backend.tokenizer.decode(direct_greedy(tiny_backend, prompt, 12), skip_special_tokens=True)
        assert gen.text == alone.strip()


def test_token_counts_match_the_tokenizer(tiny_backend: HFBackend) -> None:
    [[gen]] = tiny_backend.generate(PROMPTS[:1], GREEDY)
    prompt_ids = tiny_backend.tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, return_dict=False)
    assert gen.prompt_tokens == len(prompt_ids)
    assert gen.completion_tokens == 12 and gen.finish_reason == "length"


def test_n_samples_per_prompt_come_back_grouped_and_differ(tiny_backend: HFBackend) -> None:
    out = tiny_backend.generate(PROMPTS[:2], SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=1))
    assert [len(o) for o in out] == [3, 3]
    assert len({g.text for g in out[0]}) > 1


def test_same_seed_gives_same_samples(tiny_backend: HFBackend) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=5)
    first = [g.text for o in tiny_backend.generate(PROMPTS, params) for g in o]
    second = [g.text for o in tiny_backend.generate(PROMPTS, params) for g in o]
    assert first == second


def test_a_sampled_reply_depends_only_on_its_own_seed_and_prompt_not_on_its_batch(tiny_backend: HFBackend) -> None:
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)
    target = Request(PROMPTS[1], sampled)
    others = [Request(p, sampled.with_(seed=s)) for p in PROMPTS for s in (1, 2)]
    others += [Request([{"role": "user", "content": "Tom has " + "many " * k + "apples."}], sampled) for k in range(6)]
    [alone] = tiny_backend.generate_requests([target])
    beside = tiny_backend.generate_requests([*others[:5], target, *others[5:]])[5]
    assert (beside.text, beside.completion_tokens) == (alone.text, alone.completion_tokens)
    [reseeded] = tiny_backend.generate_requests([Request(PROMPTS[1], sampled.with_(seed=8))])
    assert reseeded.text != alone.text  # the seed does matter


def test_generation_stops_at_end_of_turn(tiny_backend: HFBackend) -> None:
    eos = tiny_backend.tokenizer.eos_token_id
    model = tiny_backend.model
    original = model.lm_head.weight.data.clone()
    try:
        # Make end-of-turn the most likely next token everywhere: generation must stop after one token.
        with torch.no_grad():
            model.lm_head.weight.data[eos] += 1000.0
        [[gen]] = tiny_backend.generate(PROMPTS[:1], SamplingParams(max_new_tokens=10, temperature=0.0, seed=99))
    finally:
        model.lm_head.weight.data.copy_(original)
    assert (gen.text, gen.completion_tokens, gen.finish_reason) == ("", 1, "stop")


def test_batches_are_cut_by_rows_and_tokens(tiny_backend: HFBackend) -> None:
    lengths = sorted([5] * 3 + [50] * 2 + [7] * 4)
    backend = HFBackend(tiny_backend.model, tiny_backend.tokenizer, name="t", max_batch_size=4, max_batch_tokens=110)
    batches = backend._batches(lengths)
    assert [len(b) for b in batches] == [4, 3, 2]
    assert [lengths[i] for i in batches[-1]] == [50, 50]


def test_prefill_batches_are_also_cut_before_padding_passes_a_quarter(tiny_backend: HFBackend) -> None:
    work = [10, 10, 11, 12, 30, 31, 90]
    batches = tiny_backend._batches([100] * len(work), work=work)
    assert batches == [[0, 1, 2, 3], [4, 5], [6]]
    for batch in batches:
        assert max(work[i] for i in batch) * len(batch) <= 1.25 * sum(work[i] for i in batch)


def test_cache_makes_a_repeated_computation_free(tiny_backend: HFBackend, tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "cache.sqlite")
    backend = HFBackend(tiny_backend.model, tiny_backend.tokenizer, name="tiny", cache=cache)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=3)
    first = backend.generate(PROMPTS, params)
    calls = backend.stats.calls
    second = backend.generate(PROMPTS, params)
    assert backend.stats.calls == calls == 1
    assert backend.stats.cache_hits == 6 and cache.hits == 6
    assert [g.text for o in first for g in o] == [g.text for o in second for g in o]
    assert all(g.cached for o in second for g in o)


def test_asking_for_more_samples_reuses_the_first_ones(tiny_backend: HFBackend, tmp_path: Path) -> None:
    backend = HFBackend(tiny_backend.model, tiny_backend.tokenizer, name="tiny", cache=RequestCache(tmp_path / "c.db"))
    backend.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4, n=2))
    backend.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4, n=3))
    assert backend.stats.cache_hits == 2 and backend.stats.requests == 3


def test_new_weights_revision_misses_the_cache(tiny_backend: HFBackend, tmp_path: Path) -> None:
    backend = HFBackend(tiny_backend.model, tiny_backend.tokenizer, name="tiny", cache=RequestCache(tmp_path / "c.db"))
    backend.generate(PROMPTS[:1], GREEDY)
    backend.set_revision("step-1")
    backend.generate(PROMPTS[:1], GREEDY)
    assert backend.stats.cache_hits == 0 and backend.stats.calls == 2


def test_training_mode_is_restored_after_generation(tiny_backend: HFBackend) -> None:
    tiny_backend.model.train()
    try:
        tiny_backend.generate(PROMPTS[:1], GREEDY)
        assert tiny_backend.model.training
    finally:
        tiny_backend.model.eval()
