"""The hf backend's token loop: it generates what transformers' `generate` does, while rows that have stopped leave
the batch, and it samples exactly as the request says."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from collab.backends.decode import decode, sample_next
from collab.backends.hf import HFBackend


@pytest.fixture(scope="module")
def lively(tiny_backend: HFBackend) -> Any:
    """The tiny random model with larger weights: its greedy replies vary from token to token and row to row (the
    original repeats one token), so that stops land at different steps."""
    model = copy.deepcopy(tiny_backend.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.5, generator=generator)
    return model


def left_padded(backend: HFBackend, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [backend.encode_messages([{"role": "user", "content": t}]) for t in texts]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), backend.tokenizer.pad_token_id)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, p in enumerate(encoded):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return ids, mask


def stop_tokens_for_early_stops(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> set[int]:
    """Tokens the model generates late in some rows and never early, so that rows stop at different steps."""
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                         pad_token_id=0)[:, ids.shape[1] :]
    early = set(out[:, :4].flatten().tolist())
    return {token for row, step in [(0, 5), (1, 9), (2, 13)] if (token := int(out[row, step])) not in early}


def test_greedy_replies_equal_transformers_generate_while_stopped_rows_leave_the_batch(
    tiny_backend: HFBackend, lively: Any
) -> None:
    texts = [f"Tom has {i} boxes with {i * 3} apples each. How many?" + " Really." * i for i in range(8)]
    ids, mask = left_padded(tiny_backend, texts)
    stops = stop_tokens_for_early_stops(lively, ids, mask)
    reference = lively.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                                pad_token_id=0, eos_token_id=sorted(stops))
    rows_fed: list[int] = []
    forward = lively.forward

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows_fed.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    lively.forward = counting
    try:
        rows = decode(lively, ids, mask, None, max_new=16, temperature=0.0, top_p=1.0, stop_ids=stops)
    finally:
        del lively.forward
    for row, expected in zip(rows, reference[:, ids.shape[1] :].tolist()):
        stop = next((k for k, t in enumerate(expected) if t in stops), None)
        assert row.end == stop
        assert row.tokens == (expected if stop is None else expected[: stop + 1])
    assert len({row.end for row in rows}) > 1  # the rows did stop at different steps
    assert sum(rows_fed[1:]) < len(texts) * (len(rows_fed) - 1)  # and the stopped ones were not fed on


def test_kept_states_are_those_a_fresh_prefill_of_prompt_and_reply_computes(
    tiny_backend: HFBackend, lively: Any
) -> None:
    ids, mask = left_padded(tiny_backend, ["Short.", "A much longer question about apples and boxes?"])
    rows = decode(lively, ids, mask, None, max_new=6, temperature=0.0, top_p=1.0, stop_ids=set(), keep_states=True)
    for row, p_ids, p_mask in zip(rows, ids, mask):
        sequence = p_ids[p_mask.bool()].tolist() + row.tokens[: row.fed]
        fresh = lively(input_ids=torch.tensor([sequence]), use_cache=True).past_key_values
        assert row.states is not None and row.fed == 5
        for (keys, values), layer in zip(row.states, fresh.layers):
            torch.testing.assert_close(keys, layer.keys[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(values, layer.values[0], atol=1e-4, rtol=1e-4)


def generators(seeds: range) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def test_temperature_zero_is_argmax_and_a_tiny_top_p_keeps_only_the_likeliest_token() -> None:
    logits = torch.tensor([[0.1, 2.0, 1.9, -1.0], [3.0, 0.0, 2.9, 0.0]])
    assert sample_next(logits, 0.0, 1.0, None).tolist() == [1, 0]
    rows = generators(range(2))
    for _ in range(20):
        assert sample_next(logits, 1.0, 0.01, rows).tolist() == [1, 0]


def test_sampling_follows_the_softmax_at_the_temperature_and_repeats_under_the_same_seeds() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(4000, 3)
    draws = sample_next(logits, 1.0, 1.0, generators(range(4000)))
    shares = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(shares, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)
    assert torch.equal(draws, sample_next(logits, 1.0, 1.0, generators(range(4000))))
    # top_p 0.8 keeps the two likeliest (0.7 + 0.2 reaches it), renormalised.
    nucleus = sample_next(logits, 1.0, 0.8, generators(range(4000, 8000)))
    assert set(nucleus.tolist()) == {0, 1}
    # Halving the temperature squares the odds: 0.49 : 0.04 : 0.01.
    cold = sample_next(logits, 0.5, 1.0, generators(range(8000, 12000)))
    torch.testing.assert_close(torch.bincount(cold, minlength=3).float() / len(cold),
                               torch.tensor([0.49, 0.04, 0.01]) / 0.54, atol=0.03, rtol=0)


def test_a_row_samples_from_its_own_generator_whoever_shares_the_batch() -> None:
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(3)) * 2
    together = sample_next(logits, 1.0, 0.9, generators(range(6)))
    for row in range(6):
        alone = sample_next(logits[row : row + 1], 1.0, 0.9, generators(range(row, row + 1)))
        assert alone.tolist() == [together[row].item()]
    with pytest.raises(ValueError, match="one generator per row"):
        sample_next(logits, 1.0, 1.0, generators(range(5)))


def test_each_row_keeps_its_generator_when_stopped_rows_leave_the_batch(tiny_backend: HFBackend, lively: Any) -> None:
    """Rows stop at different steps and the batch is cut; every surviving row must still draw its tokens from its
    own stream, exactly as it does generating alone."""
    texts = [f"Tom has {i} boxes with {i * 3} apples each. How many?" + " Really." * i for i in range(8)]
    ids, mask = left_padded(tiny_backend, texts)

    def sampled(rows: range, stops: set[int]) -> list[list[int]]:
        out = decode(lively, ids[rows.start : rows.stop], mask[rows.start : rows.stop], None, max_new=16,
                     temperature=1.0, top_p=1.0, stop_ids=stops, generators=generators(rows))
        return [row.tokens for row in out]

    # Stop tokens that rows 0, 1 and 2 sample at steps 3, 7 and 11, so that the batch is cut twice.
    free = sampled(range(8), set())
    stops = {free[row][step] for row, step in ((0, 3), (1, 7), (2, 11))}
    together = sampled(range(8), stops)
    assert [len(tokens) for tokens in together[:3]] == [4, 8, 12]
    assert [sampled(range(row, row + 1), stops)[0] for row in range(8)] == together
