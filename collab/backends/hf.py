"""Local transformers generation on CPU or GPU.

Requests are grouped by sampling parameters, sorted by prompt length and cut into batches, so each `generate` call
pads as little as possible. Prompts are left-padded; generation stops at EOS (the chat template's end-of-turn token).
The backend can wrap a live model object (the policy being trained), in which case `set_revision` must be called
after each optimizer step so cached samples (and cached attention states) of older weights are never reused.

With `prefix_cache_bytes`, the attention key/value states of each prompt and reply are kept (collab.backends.
prefix_cache) and a later prompt that extends one of them (the next turn of a rollout, or another rollout of the same
candidate) prefills only its new tokens.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

import torch

from collab.backends.base import Backend, Request
from collab.backends.cache import RequestCache
from collab.backends.prefix_cache import LayerStates, PrefixKVStore
from collab.chat import Generation, SamplingParams, message


class HFBackend(Backend):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        revision: str = "0",
        max_batch_size: int = 32,
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
        """Token ids of the prompt. A final assistant message is a prefill: the reply continues it."""
        prefill = bool(messages) and messages[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=not prefill, continue_final_message=prefill, tokenize=True,
            return_dict=False,
        )

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        encoded = [self.encode_messages(r.messages) for r in requests]
        if self.prefix_store is not None:
            self._prefill_shared(encoded)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            p = r.params
            groups[(p.max_new_tokens, p.temperature, p.top_p)].append(i)
        out: list[Generation | None] = [None] * len(requests)
        for (max_new, temperature, top_p), members in groups.items():
            members.sort(key=lambda i: len(encoded[i]))
            for batch in self._batches(members, encoded, max_new):
                results = self._run(
                    [encoded[i] for i in batch], max_new, temperature, top_p, [requests[i] for i in batch]
                )
                for i, gen in zip(batch, results):
                    out[i] = gen
        return [g for g in out if g is not None]

    def _prefill_shared(self, encoded: list[list[int]]) -> None:
        """Prefill once, into the prefix store, every prompt that several requests share (the S rollouts of one
        candidate, the n samples of one prompt), so that each of them then prefills only its last token. A one-token
        greedy `_run` does it: `_remember` stores the prompt's states, and its one sampled token is dropped."""
        repeated = Counter(tuple(p) for p in encoded)
        shared = sorted((list(p) for p, count in repeated.items() if count > 1), key=len)
        for batch in self._batches(list(range(len(shared))), shared, 1):
            prompts = [shared[i] for i in batch]
            self._run(prompts, 1, 0.0, 1.0, [Request([message("user", "")], SamplingParams()) for _ in prompts])

    def _batches(self, members: list[int], encoded: list[list[int]], max_new: int) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        for i in members:
            longest = len(encoded[i]) + max_new  # members are sorted, so i is the longest so far
            if current and (len(current) >= self.max_batch_size or longest * (len(current) + 1) > self.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    @torch.inference_mode()
    def _run(
        self, prompts: list[list[int]], max_new: int, temperature: float, top_p: float, requests: list[Request]
    ) -> list[Generation]:
        # Each row is [left padding | reused prefix | gap | rest of the prompt]: the reused prefixes end together at
        # column `reused`, where the cache handed to generate ends, and the rest is right-aligned after it. Pads and
        # gaps are masked out, and generate numbers positions from the mask, so every real token keeps the position
        # it had when its states were computed.
        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        store = self.prefix_store
        # At least one prompt token is always prefilled: generate needs the logits of the last one.
        hits = [store.longest_prefix(p, limit=len(p) - 1) for p in prompts] if store is not None else [(0, None)] * len(prompts)
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
            store.stats.reused_tokens += sum(n for n, _ in hits)
            store.stats.prefilled_tokens += sum(len(p) - n for p, (n, _) in zip(prompts, hits))
        # One seed per batch, derived from its requests, so a repeated batch samples the same replies.
        digest = hashlib.sha256(repr([(r.seed, len(p)) for r, p in zip(requests, prompts)]).encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:8], "little") % (2**63))
        sampling = temperature > 0
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                past_key_values=self._past(hits, reused, device) if reused else None,
                max_new_tokens=max_new,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=self._stop_ids(),
                use_cache=True,
                return_dict_in_generate=True,
            )
        finally:
            if was_training:
                self.model.train()
        new = output.sequences[:, width:].tolist()
        stops = set(self._stop_ids())
        ends = [next((k for k, t in enumerate(tokens) if t in stops), None) for tokens in new]
        if store is not None:
            self._remember(prompts, new, ends, mask, output.past_key_values)
        results = []
        for p, tokens, end, request in zip(prompts, new, ends, requests):
            prefill = request.messages[-1]["role"] == "assistant"
            kept = tokens if end is None else tokens[:end]
            results.append(
                Generation(
                    # A continuation keeps its leading space; a fresh reply is stripped.
                    text=self._decode(kept, prefill),
                    prompt_tokens=len(p),
                    completion_tokens=len(kept) + (0 if end is None else 1),
                    finish_reason="length" if end is None else "stop",
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

    def _remember(
        self, prompts: list[list[int]], new: list[list[int]], ends: list[int | None], mask: torch.Tensor, cache: Any
    ) -> None:
        """Store each row's prompt and reply states. The cache lacks the last sampled token (never fed back), so a
        reply cut at the token limit is stored without it; a reply's stop token is not stored either."""
        assert self.prefix_store is not None
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            # A sliding-window layer keeps only its last positions, so its states are no prefix to reuse.
            self.prefix_store = None
            return
        width, steps = mask.shape[1], len(new[0]) if new else 0
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        for row, (p, tokens, end) in enumerate(zip(prompts, new, ends)):
            kept = min(len(tokens) if end is None else end, steps - 1)
            columns = torch.cat([torch.nonzero(mask[row]).flatten(), torch.arange(width, width + kept)])
            columns = columns.to(layers[0][0].device)
            states = [(k[row].index_select(1, columns), v[row].index_select(1, columns)) for k, v in layers]
            self.prefix_store.add(p + tokens[:kept], states)

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
