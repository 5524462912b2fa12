"""The one generation interface: lists of chat messages in, replies with token counts out.

A backend knows nothing of tasks or rewards. Subclasses implement `_generate_batch` for a flat list of requests
(one sample each); this base class expands `n`, consults the request cache and keeps the usage counters.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from collab.backends.cache import RequestCache, request_key
from collab.chat import Conversation, Generation, SamplingParams


@dataclass(frozen=True)
class Request:
    """One sample to produce: `params.n` is ignored, `sample_index` says which sample of the prompt this is."""

    messages: Conversation
    params: SamplingParams
    sample_index: int = 0

    @property
    def seed(self) -> int:
        return self.params.seed + self.sample_index


@dataclass
class BackendStats:
    """Running usage totals, reported in progress bars and run summaries."""

    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    # HTTP 429 answers received (every attempt). Each was retried or ended as a failure named RateLimitError; a
    # count that grows run after run says the recipe's concurrency / requests_per_minute exceed the provider's quota.
    rate_limited: int = 0
    # Prompts that lost their oldest turns to fit the engine's max_model_len (vllm); skipped ones are failures.
    prompts_truncated: int = 0
    cost_usd: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def record(self, gen: Generation) -> None:
        if gen.cached:
            self.cache_hits += 1
            return
        self.requests += 1
        self.prompt_tokens += gen.prompt_tokens
        self.completion_tokens += gen.completion_tokens
        self.cost_usd += gen.cost_usd
        if not gen.ok:
            self.failures += 1
            reason = (gen.error or "unknown").split(":")[0][:80]
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1


class Backend(ABC):
    """Turns many conversations into replies in as few model calls as the backend allows."""

    def __init__(self, name: str, cache: RequestCache | None = None) -> None:
        self.name = name
        self.cache = cache
        self.stats = BackendStats()
        self._stats_lock = threading.Lock()

    @property
    @abstractmethod
    def identity(self) -> str:
        """What makes two backends produce the same samples: model name plus a weights revision or hash."""

    @abstractmethod
    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        """Produce one generation per request, in order. Failures come back as `Generation.failure(...)`."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under this backend's tokenizer; a whitespace estimate where none is known."""
        return len(text.split())

    def generate(self, prompts: list[Conversation], params: SamplingParams) -> list[list[Generation]]:
        """`params.n` replies for each prompt, in prompt order."""
        requests = [Request(p, params, i) for p in prompts for i in range(params.n)]
        flat = self.generate_requests(requests)
        return [flat[k * params.n : (k + 1) * params.n] for k in range(len(prompts))]

    def generate_requests(self, requests: list[Request]) -> list[Generation]:
        """One generation per request; cached samples are reused, the rest go to the model in one batch."""
        if not requests:
            return []
        identity = self.identity
        keys = [request_key(identity, r.messages, r.params, r.sample_index) for r in requests]
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in cached]
        # Identical requests inside one call (same prompt, params and sample index) are generated once.
        first_of: dict[str, int] = {}
        unique = [i for i in todo if first_of.setdefault(keys[i], i) == i]
        fresh = self._generate_batch([requests[i] for i in unique]) if unique else []
        if len(fresh) != len(unique):
            raise RuntimeError(f"{type(self).__name__} returned {len(fresh)} generations for {len(unique)} requests")
        produced = {keys[i]: g for i, g in zip(unique, fresh)}
        if self.cache is not None:
            self.cache.put_many(produced)
        out = [cached.get(k) or produced[k] for k in keys]
        with self._stats_lock:
            if unique:
                self.stats.calls += 1
            for g in cached.values():
                self.stats.record(g)
            for g in fresh:
                self.stats.record(g)
        return out

    def close(self) -> None:
        """Release servers, engines or connections held by the backend."""
