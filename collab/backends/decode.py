"""The token loop of the hf backend: one prefill, then one forward per new token for the rows still generating.

transformers' `generate` keeps every row of a batch in every forward until the longest reply ends, so a batch whose
replies stop at 10 tokens and 60 tokens pays for 60 tokens in every row. Rollout replies vary that much (a short
question next to a long answer), and on a CPU each forward costs in proportion to its rows. This loop drops the rows
that have stopped from the batch, cutting their attention states out of the cache, once a quarter of the live rows
have stopped (a cut copies the whole cache, so it is not done for every single row).

Sampling is the request's and nothing else: temperature, then nucleus (top-p) filtering, as transformers applies
them; no defaults from the model's generation config are added behind the caller's back. Each row draws from a
generator of its own, so a row's tokens do not depend on which other rows share its batch, nor on when they leave it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from collab.backends.prefix_cache import LayerStates

# A cut happens when at most this share of the live rows still generates.
_CUT_WHEN_LIVE_AT_MOST = 0.75


@dataclass
class DecodedRow:
    """One row's reply: its sampled tokens (the stop token included, when one was sampled), the index of that stop
    token, and optionally the key/value states of every prompt and reply token the model was fed."""

    tokens: list[int]
    end: int | None
    states: LayerStates | None = None

    @property
    def fed(self) -> int:
        """Reply tokens whose states are in the cache: all but a stop token and the last sampled token."""
        return self.end if self.end is not None else max(len(self.tokens) - 1, 0)


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generators: Sequence[torch.Generator] | None
) -> torch.Tensor:
    """The next token of each row: greedy at temperature 0, else temperature and top-p sampling, row i drawing its
    random numbers from `generators[i]` only (needed unless greedy; on the logits' device)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if generators is None or len(generators) != logits.shape[0]:
        raise ValueError(f"sampling {logits.shape[0]} rows needs one generator per row")
    logits = logits.float() / temperature
    if top_p < 1.0:
        ascending, order = torch.sort(logits, dim=-1)
        # Drop the least likely tokens whose total probability stays within 1 - top_p; the likeliest always stays.
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[:, -1] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    # The exponential race (vLLM samples the same way): the token maximising p / q for q ~ Exp(1) drawn per token
    # is distributed as p. Unlike inverse-CDF sampling, whose bins are as narrow as the smallest probabilities, a
    # last-bit change of the logits (other padding, another batch shape, cached attention states) changes the
    # winner only when the top two p / q are that close, about once in a million tokens.
    probs = logits.softmax(dim=-1)
    noise = torch.empty_like(probs)
    for row, generator in zip(noise, generators):
        row.exponential_(generator=generator)
    # A zero draw would make any token, even a filtered one (0 / 0), the winner.
    return probs.div_(noise.clamp_(min=torch.finfo(noise.dtype).tiny)).argmax(dim=-1)


def decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    past: Any,
    *,
    max_new: int,
    temperature: float,
    top_p: float,
    stop_ids: set[int],
    generators: Sequence[torch.Generator] | None = None,
    keep_states: bool = False,
) -> list[DecodedRow]:
    """Generate up to `max_new` tokens for each row.

    `input_ids` are the columns to prefill; `attention_mask` covers the columns already in `past` (None for none)
    and then `input_ids`, 0 for padding and gaps. Positions come from the mask, so a token after a gap keeps the
    position its cached predecessors imply. `generators` (one per row, needed unless temperature is 0) keep their
    rows as rows leave the batch. With `keep_states`, each row also returns the states of its real prompt
    tokens and fed reply tokens, in order (None for every row if the model has sliding-window layers, whose cache
    holds only the last positions).
    """
    prompt_mask = attention_mask
    width = attention_mask.shape[1]
    positions = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    next_position = attention_mask.sum(dim=-1)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions[:, width - input_ids.shape[1] :],
        past_key_values=past,
        use_cache=True,
        **extra,
    )
    cache = out.past_key_values
    keep_states = keep_states and not any(getattr(layer, "is_sliding", False) for layer in cache.layers)
    rows = [DecodedRow([], None) for _ in range(input_ids.shape[0])]
    live = list(range(len(rows)))  # the row behind each batch slot
    for step in range(max_new):
        chosen = sample_next(out.logits[:, -1, :], temperature, top_p,
                             None if generators is None else [generators[row] for row in live])
        for row, token in zip(live, chosen.tolist()):
            if rows[row].end is None:
                rows[row].tokens.append(token)
                if token in stop_ids:
                    rows[row].end = step
        going = [slot for slot, row in enumerate(live) if rows[row].end is None]
        if not going or step == max_new - 1:
            break
        if len(going) <= _CUT_WHEN_LIVE_AT_MOST * len(live):
            if keep_states:
                for slot, row in enumerate(live):
                    if rows[row].end is not None:
                        rows[row].states = _row_states(cache, slot, prompt_mask[row], rows[row].fed)
            index = torch.tensor(going, device=chosen.device)
            cache.batch_select_indices(index)
            attention_mask, next_position, chosen = attention_mask[index], next_position[index], chosen[index]
            live = [live[slot] for slot in going]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=1)
        out = model(
            input_ids=chosen[:, None],
            attention_mask=attention_mask,
            position_ids=next_position[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        next_position = next_position + 1
    if keep_states:
        for slot, row in enumerate(live):
            rows[row].states = _row_states(cache, slot, prompt_mask[row], rows[row].fed)
    return rows


def _row_states(cache: Any, slot: int, prompt_mask: torch.Tensor, fed: int) -> LayerStates:
    """The states of one batch slot's real prompt columns followed by its first `fed` reply columns."""
    width = prompt_mask.shape[0]
    reply = torch.arange(width, width + fed, device=prompt_mask.device)
    columns = torch.cat([torch.nonzero(prompt_mask).flatten(), reply]).to(cache.layers[0].keys.device)
    return [(layer.keys[slot].index_select(1, columns), layer.values[slot].index_select(1, columns))
            for layer in cache.layers]


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the forward can compute logits for the last position only (a PEFT wrapper passes it through)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
