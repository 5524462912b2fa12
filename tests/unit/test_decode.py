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
        rows = decode(lively, ids, mask, None, max_new=16, temperature=0.0, top_p=1.0, stop_ids=stops,
                      generator=torch.Generator().manual_seed(0))
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
    rows = decode(lively, ids, mask, None, max_new=6, temperature=0.0, top_p=1.0, stop_ids=set(),
                  generator=torch.Generator().manual_seed(0), keep_states=True)
    for row, p_ids, p_mask in zip(rows, ids, mask):
        sequence = p_ids[p_mask.bool()].tolist() + row.tokens[: row.fed]
        fresh = lively(input_ids=torch.tensor([sequence]), use_cache=True).past_key_values
        assert row.states is not None and row.fed == 5
        for (keys, values), layer in zip(row.states, fresh.layers):
            torch.testing.assert_close(keys, layer.keys[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(values, layer.values[0], atol=1e-4, rtol=1e-4)


def test_temperature_zero_is_argmax_and_a_tiny_top_p_keeps_only_the_likeliest_token() -> None:
    logits = torch.tensor([[0.1, 2.0, 1.9, -1.0], [3.0, 0.0, 2.9, 0.0]])
    generator = torch.Generator().manual_seed(0)
    assert sample_next(logits, 0.0, 1.0, generator).tolist() == [1, 0]
    for _ in range(20):
        assert sample_next(logits, 1.0, 0.01, generator).tolist() == [1, 0]


def test_sampling_follows_the_softmax_at_the_temperature_and_repeats_under_the_same_seed() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(4000, 3)
    draws = sample_next(logits, 1.0, 1.0, torch.Generator().manual_seed(1))
    shares = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(shares, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)
    assert torch.equal(draws, sample_next(logits, 1.0, 1.0, torch.Generator().manual_seed(1)))
    # top_p 0.8 keeps the two likeliest (0.7 + 0.2 reaches it), renormalised.
    nucleus = sample_next(logits, 1.0, 0.8, torch.Generator().manual_seed(2))
    assert set(nucleus.tolist()) == {0, 1}
