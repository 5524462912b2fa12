"""Local transformers generation on CPU or GPU.

Requests are grouped by sampling parameters, sorted by prompt length and cut into batches, so each batch pads as
little as possible. Prompts are left-padded; a reply stops at EOS (the chat template's end-of-turn token), and
collab.backends.decode drops the rows that have stopped from the batch while the others go on.
The backend can wrap a live model object (the policy being trained), in which case `set_revision` must be called
after each optimizer step so cached samples (and cached attention states) of older weights are never reused.

With `prefix_cache_bytes`, the attention key/value states of each prompt and reply are kept (collab.backends.
prefix_cache) and a later prompt that extends one of them (the next turn of a rollout, or another rollout of the same
candidate) prefills only its new tokens.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from collab.backends.base import Backend, Request
from collab.backends.cache import RequestCache
from collab.backends.decode import DecodedRow, decode
from collab.backends.prefix_cache import LayerStates, PrefixKVStore, common_prefix_length
from collab.chat import Generation, SamplingParams, message

# A prefill sub-batch computes at most this many row-tokens per prompt token it needs (the rest is padding).
_MAX_PADDING = 1.25
# A prefix shared by several prompts is computed on its own first when this many of its tokens are not stored yet.
_MIN_SHARED = 16
# The request behind a store-only prefill, whose one sampled token is dropped.
_PREFILL_REQUEST = Request([message("user", "")], SamplingParams())


def encode_messages(tokenizer: Any, messages: list) -> list[int]:
    """Token ids of the prompt the model replies to. A final assistant message is a prefill: the reply continues it."""
    prefill = bool(messages) and messages[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=not prefill, continue_final_message=prefill, tokenize=True,
        return_dict=False,
    )


def row_generator(seed: int, prompt: list[int], device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream of one request: seeded by its seed and prompt tokens only, so that its reply does not depend
    on the other requests of its batch, and a repeated or resumed request samples the same reply. A generator of its
    own leaves the global random state (the trainer's) untouched."""
    digest = hashlib.sha256(f"{seed}:".encode() + np.asarray(prompt, dtype="<i8").tobytes()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") % (2**63))


class HFBackend(Backend):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        revision: str = "0",
        max_batch_size: int = 96,
        max_batch_tokens: int = 65536,
        cache: RequestCache | None = None,
        prefix_cache_bytes: int = 0,
    ) -> None:
        super().__init__(name, cache)
        self.model = model
        self.tokenizer = tokenizer
        self.revision = revision
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_store = PrefixKVStore(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_name(cls, name: str, *, dtype: str = "auto", device: str | None = None, **kwargs: Any) -> HFBackend:
        from collab.models import load_model, load_tokenizer, resolve_model, weights_revision

        model = load_model(name, dtype=dtype, device=device)
        return cls(model, load_tokenizer(name), name=name, revision=weights_revision(resolve_model(name)), **kwargs)

    @property
    def identity(self) -> str:
        return f"hf:{self.name}@{self.revision}"

    def set_revision(self, revision: str | int) -> None:
        """Mark that the wrapped model's weights changed (e.g. after an optimizer step)."""
        self.revision = str(revision)
        if self.prefix_store is not None:
            self.prefix_store.clear()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_messages(self, messages: list) -> list[int]:
        return encode_messages(self.tokenizer, messages)

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        encoded = [self.encode_messages(r.messages) for r in requests]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            p = r.params
            groups[(p.max_new_tokens, p.temperature, p.top_p)].append(i)
        out: list[Generation | None] = [None] * len(requests)
        for (max_new, temperature, top_p), members in groups.items():
            members.sort(key=lambda i: len(encoded[i]))
            for cut in self._batches([len(encoded[i]) + max_new for i in members]):
                batch = [members[k] for k in cut]
                prompts = [encoded[i] for i in batch]
                if self.prefix_store is not None:
                    self._prefill(prompts)
                results = self._run(prompts, max_new, temperature, top_p, [requests[i] for i in batch])
                for i, gen in zip(batch, results):
                    out[i] = gen
        return [g for g in out if g is not None]

    def _prefill(self, prompts: list[list[int]]) -> None:
        """Store the states of a batch's prompts, all but their last token, before the batch generates, so that each
        of its rows then prefills only its last token and nothing in it is padded. Skipped when the states would
        crowd the store, as evicting them before the batch runs would compute them twice."""
        assert self.prefix_store is not None
        wanted = {tuple(p[:-1]) for p in prompts if len(p) > 1}
        missing = {s: self._missing(s) for s in wanted}
        per_token = self.prefix_store.bytes_per_token
        if per_token is not None and sum(missing.values()) * per_token > self.prefix_store.max_bytes // 2:
            return
        self._store_states(missing)

    def _store_states(self, missing: dict[tuple[int, ...], int]) -> None:
        """Compute the states of each token sequence (mapped to how many of its tokens have no stored states yet)
        into the prefix store, once each, and each prefix that several of them share once too (the conversation
        before the candidates of one state, the candidate before its S rollouts' user replies), before the
        sequences themselves.

        Sequences are computed in sub-batches of similar length: in one forward every row is padded to the longest,
        and what is left to compute differs a lot between sequences (a whole new conversation next to one new user
        message). A one-token greedy `_run` computes them: `_remember` stores the states, and the sampled token is
        dropped.
        """
        todo = sorted(s for s, n in missing.items() if n > 0)  # sorted, sequences sharing a prefix are adjacent
        shared = set()
        for a, b in itertools.pairwise(todo):
            length = common_prefix_length(np.asarray(a), np.asarray(b))
            if length - (len(a) - missing[a]) >= _MIN_SHARED and length < min(len(a), len(b)):
                shared.add(a[:length])
        if shared:
            self._store_states({s: self._missing(s) for s in shared})
            missing = {s: self._missing(s) for s in todo}  # the shared prefixes now serve part of each
        todo.sort(key=missing.__getitem__)
        for cut in self._batches([len(s) for s in todo], work=[missing[s] for s in todo]):
            self._run([list(todo[k]) for k in cut], 1, 0.0, 1.0, [_PREFILL_REQUEST] * len(cut))

    def _missing(self, sequence: tuple[int, ...]) -> int:
        """How many of the sequence's tokens have no stored states."""
        assert self.prefix_store is not None
        return len(sequence) - self.prefix_store.longest_prefix(list(sequence), limit=len(sequence))[0]

    def _batches(self, lengths: list[int], *, work: list[int] | None = None) -> list[list[int]]:
        """Cut items 0..n-1, in order, into batches of at most `max_batch_size` rows and `max_batch_tokens` tokens
        (rows times the longest of `lengths`). With `work` (ascending: the tokens each item must compute, the
        widest of which every row of its forward is padded to), a batch is also cut before its padding passes
        `_MAX_PADDING`."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = useful = 0
        for i, length in enumerate(lengths):
            rows = len(current) + 1
            if current and (
                rows > self.max_batch_size
                or max(longest, length) * rows > self.max_batch_tokens
                or (work is not None and work[i] * rows > _MAX_PADDING * (useful + work[i]))
            ):
                batches.append(current)
                current, longest, useful = [], 0, 0
            current.append(i)
            longest, useful = max(longest, length), useful + (work[i] if work is not None else 0)
        if current:
            batches.append(current)
        return batches

    @torch.inference_mode()
    def _run(
        self, prompts: list[list[int]], max_new: int, temperature: float, top_p: float, requests: list[Request]
    ) -> list[Generation]:
        # Each row is [left padding | reused prefix | gap | rest of the prompt]: the reused prefixes end together at
        # column `reused`, where the reused cache ends, and the rest is right-aligned after it. Pads and gaps are
        # masked out, and positions are numbered from the mask, so every real token keeps the position it had when
        # its states were computed.
        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        store = self.prefix_store
        # At least one prompt token is always prefilled: sampling needs the logits of the last one.
        hits = [store.longest_prefix(p, limit=len(p) - 1) if store is not None else (0, None) for p in prompts]
        reused = max(n for n, _ in hits)
        width = reused + max(len(p) - n for p, (n, _) in zip(prompts, hits))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, (p, (n, _)) in enumerate(zip(prompts, hits)):
            ids[row, reused - n : reused] = torch.tensor(p[:n], dtype=torch.long)
            ids[row, width - (len(p) - n) :] = torch.tensor(p[n:], dtype=torch.long)
            mask[row, reused - n : reused] = 1
            mask[row, width - (len(p) - n) :] = 1
        if store is not None:
            prefilled = sum(len(p) - n for p, (n, _) in zip(prompts, hits))
            store.stats.reused_tokens += sum(n for n, _ in hits)
            store.stats.prefilled_tokens += prefilled
            store.stats.padded_tokens += len(prompts) * (width - reused) - prefilled
        generators = ([row_generator(r.seed, p, device) for r, p in zip(requests, prompts)]
                      if temperature > 0 else None)
        was_training = self.model.training
        self.model.eval()
        try:
            rows = decode(
                self.model,
                ids[:, reused:].to(device),
                mask.to(device),
                self._past(hits, reused, device) if reused else None,
                max_new=max_new,
                temperature=temperature,
                top_p=top_p,
                stop_ids=set(self._stop_ids()),
                generators=generators,
                keep_states=store is not None,
            )
        finally:
            if was_training:
                self.model.train()
        if store is not None:
            self._remember(prompts, rows)
        results = []
        for p, row, request in zip(prompts, rows, requests):
            prefill = request.messages[-1]["role"] == "assistant"
            kept = row.tokens if row.end is None else row.tokens[: row.end]
            results.append(
                Generation(
                    # A continuation keeps its leading space; a fresh reply is stripped.
                    text=self._decode(kept, prefill),
                    prompt_tokens=len(p),
                    completion_tokens=len(row.tokens),
                    finish_reason="length" if row.end is None else "stop",
                )
            )
        return results

    def _past(self, hits: list[tuple[int, LayerStates | None]], reused: int, device: torch.device) -> Any:
        """A cache of `reused` positions holding each row's stored prefix right-aligned, zeros elsewhere (masked)."""
        from transformers import DynamicCache

        template = next(layers for n, layers in hits if layers is not None)
        past = []
        for layer, (keys, values) in enumerate(template):
            shape = (len(hits), keys.shape[0], reused, keys.shape[2])
            k = torch.zeros(shape, dtype=keys.dtype, device=device)
            v = torch.zeros(shape, dtype=values.dtype, device=device)
            for row, (n, layers) in enumerate(hits):
                if n:
                    k[row, :, reused - n :] = layers[layer][0][:, :n]
                    v[row, :, reused - n :] = layers[layer][1][:, :n]
            past.append((k, v))
        return DynamicCache(ddp_cache_data=past, config=self.model.config)

    def _remember(self, prompts: list[list[int]], rows: list[DecodedRow]) -> None:
        """Store each row's prompt and fed reply states (a reply's stop token and its last sampled token were
        never fed back, so they have none)."""
        assert self.prefix_store is not None
        if any(row.states is None for row in rows):
            # A sliding-window layer keeps only its last positions, so its states are no prefix to reuse.
            self.prefix_store = None
            return
        for p, row in zip(prompts, rows):
            assert row.states is not None
            self.prefix_store.add(p + row.tokens[: row.fed], row.states)

    def _decode(self, tokens: list[int], prefill: bool) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return text.rstrip() if prefill else text.strip()

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        return sorted(i for i in ids if i is not None)
