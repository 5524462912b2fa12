"""Local transformers generation on CPU or GPU.

Requests are grouped by sampling parameters, sorted by prompt length and cut into batches, so each `generate` call
pads as little as possible. Prompts are left-padded; generation stops at EOS (the chat template's end-of-turn token).
The backend can wrap a live model object (the policy being trained), in which case `set_revision` must be called
after each optimizer step so cached samples of older weights are never reused.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import torch

from collab.backends.base import Backend, Request
from collab.backends.cache import RequestCache
from collab.chat import Generation


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
    ) -> None:
        super().__init__(name, cache)
        self.model = model
        self.tokenizer = tokenizer
        self.revision = revision
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
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
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        device = next(self.model.parameters()).device
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
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
                max_new_tokens=max_new,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=self._stop_ids(),
                use_cache=True,
            )
        finally:
            if was_training:
                self.model.train()
        new = output[:, width:].tolist()
        stops = set(self._stop_ids())
        results = []
        for p, tokens, request in zip(prompts, new, requests):
            prefill = request.messages[-1]["role"] == "assistant"
            end = next((k for k, t in enumerate(tokens) if t in stops), None)
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
