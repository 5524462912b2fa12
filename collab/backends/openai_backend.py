"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM's server, llama.cpp's server, hosted APIs) as a Backend.

Why the retry loop lives here and not in the SDK: simulated users and judges issue thousands of calls per run, and a
run must neither die on one flaky call nor hang on one stuck call. So the SDK's own retries are off and every request
gets a bounded, observable policy: exponential backoff with jitter, `Retry-After` honoured, a per-attempt timeout, an
optional hard wall-time bound, and retries counted in `stats.retries`. A 429 (rate limited) is retried like a 5xx,
counted in `stats.rate_limited`, and its `Retry-After` holds back every request start of the backend, not only its own
retry, so one quota signal is not answered by a burst of further 429s. A request that still fails comes back as
`Generation.failure("<Reason>: detail")`, never as an exception and never as an empty success.

All requests of a batch run concurrently (bounded by a semaphore, optionally spaced by a requests-per-minute limiter)
on a private event loop in a background thread, so `generate` works the same from plain code, from worker threads and
from inside a running event loop (`asyncio.run`, notebooks).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import os
import random
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlparse

import openai

from collab.backends.base import Backend, Request
from collab.backends.cache import RequestCache
from collab.chat import Generation
from collab.errors import CollabError

log = logging.getLogger(__name__)

T = TypeVar("T")

# 4xx statuses that describe a transient condition (timeout, conflict, rate limit) rather than a bad request.
_RETRYABLE_4XX = frozenset({408, 409, 429})


class MalformedResponse(Exception):
    """A 2xx reply we cannot use: not JSON, no choices, no message content. Retried like a transient error."""


class WallTimeExceeded(Exception):
    """The request's `max_wall_s` budget ran out (across all attempts and backoffs)."""


def _is_loopback(base_url: str | None) -> bool:
    """True for servers on this machine, which conventionally accept any API key (vLLM, llama.cpp)."""
    if not base_url:
        return False
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: either delta-seconds or an HTTP-date; None if absent/garbled."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return max(0.0, (when - now_dt).total_seconds())


class _RateLimiter:
    """Spaces request starts at least `60 / requests_per_minute` seconds apart, across all concurrent requests.

    A minimum-interval limiter rather than a bursty bucket: provider limits are usually enforced over short windows,
    and an even spacing never trips them. Slots are reserved under a lock, so the limiter is shared safely by every
    batch that uses this backend.
    """

    def __init__(self, requests_per_minute: float) -> None:
        if requests_per_minute <= 0:
            raise CollabError(f"requests_per_minute must be positive, got {requests_per_minute}")
        self.interval = 60.0 / requests_per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve the next slot; returns how long the caller must wait before sending."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class _LoopThread:
    """A private event loop in a daemon thread: sync callers submit coroutines and block on the result.

    Running our own loop (instead of `asyncio.run` per batch) keeps one HTTP connection pool alive across batches and
    works even when the caller is itself inside a running loop, where `asyncio.run` would refuse.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="openai-backend-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("OpenAIBackend.generate called from its own event loop thread; use agenerate_requests")
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible endpoint, with bounded retries, concurrency and rate limits.

    The API key is handed to the SDK client and nowhere else: it is not an attribute, not in `repr`, not in the
    identity and hence never in the request cache.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        requests_per_minute: float | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_wall_s: float | None = None,
        price_per_million: tuple[float, float] | None = None,
        cache: RequestCache | None = None,
        name: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name or model, cache)
        if concurrency < 1:
            raise CollabError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise CollabError(f"max_retries must be >= 0, got {max_retries}")
        key = api_key or os.environ.get(api_key_env) or ("EMPTY" if _is_loopback(base_url) else None)
        if key is None:
            raise CollabError(
                f"no API key for the OpenAI-compatible backend {model!r}",
                fix=f"export {api_key_env}=... (or set api_key_env to the variable that holds it).",
            )
        self.model = model
        self.concurrency = concurrency
        self.requests_per_minute = requests_per_minute
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_wall_s = max_wall_s
        self.price_per_million = price_per_million
        self.extra_body = dict(extra_body or {})
        # Flipped to False the first time the server rejects `response_format`, so later json_mode calls skip it.
        self.supports_response_format = True
        self._limiter = _RateLimiter(requests_per_minute) if requests_per_minute else None
        # time.monotonic() before which no request of this backend starts: a 429's Retry-After speaks for the whole
        # quota, so the requests waiting behind the one that got it wait too instead of each collecting its own 429.
        # Only touched on the private loop's thread, hence no lock.
        self._paused_until = 0.0
        self._loop_thread = _LoopThread()
        self._closed = False
        # The client (and its connection pool) belongs to the private loop, so it is created there.
        self._client: openai.AsyncOpenAI = self._loop_thread.run(self._make_client(key, base_url))
        self.base_url = (base_url or str(self._client.base_url)).rstrip("/")
        self._semaphore: asyncio.Semaphore = self._loop_thread.run(self._make_semaphore())

    async def _make_client(self, key: str, base_url: str | None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=self.timeout_s)

    async def _make_semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.concurrency)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, name={self.name!r})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    # ---------------------------------------------------------------- batch entry points

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self._loop_thread.run(self._gather(requests))

    async def agenerate_requests(self, requests: list[Request]) -> list[Generation]:
        """`generate_requests` for async callers: same cache and stats, without blocking the caller's loop."""
        return await asyncio.to_thread(self.generate_requests, requests)

    async def _gather(self, requests: list[Request]) -> list[Generation]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    # ---------------------------------------------------------------- one request

    async def _one(self, request: Request) -> Generation:
        """One request with the full policy: semaphore, rate limit, timeout, retries, wall-time bound."""
        async with self._semaphore:
            started = time.monotonic()
            try:
                if self.max_wall_s is None:
                    return await self._with_retries(request, None)
                deadline = started + self.max_wall_s
                async with asyncio.timeout(self.max_wall_s):
                    return await self._with_retries(request, deadline)
            except TimeoutError:
                return Generation.failure(
                    f"WallTimeExceeded: no reply within max_wall_s={self.max_wall_s}s "
                    f"(gave up after {time.monotonic() - started:.1f}s)"
                )

    async def _with_retries(self, request: Request, deadline: float | None) -> Generation:
        attempt = 0
        json_fallback_tried = False
        while True:
            use_response_format = request.params.json_mode and self.supports_response_format
            try:
                pause = self._paused_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                if self._limiter is not None:
                    await self._limiter.acquire()
                async with asyncio.timeout(self.timeout_s):
                    gen = await self._attempt(request, use_response_format)
                if use_response_format is False and request.params.json_mode:
                    gen.extra["json_mode_unsupported"] = True
                if attempt:
                    gen.extra["retries"] = attempt
                return gen
            except Exception as exc:  # classified below; anything unknown is a bug and is not retried
                if isinstance(exc, openai.BadRequestError) and use_response_format and not json_fallback_tried:
                    # Many local servers reject `response_format`; ask once more without it, and remember.
                    json_fallback_tried = True
                    log.warning("%s rejected response_format (%s); retrying without it", self.base_url, exc.message)
                    self.supports_response_format = False
                    continue
                if json_fallback_tried and not use_response_format and isinstance(exc, openai.BadRequestError):
                    # The 400 was not about response_format after all: restore the flag for other requests.
                    self.supports_response_format = True
                retryable, wait_hint = self._classify(exc)
                reason = self._reason(exc)
                if isinstance(exc, openai.APIStatusError) and exc.status_code == 429:
                    with self._stats_lock:
                        self.stats.rate_limited += 1
                    if wait_hint is not None:
                        pause_until = time.monotonic() + min(wait_hint, self.backoff_max_s)
                        self._paused_until = max(self._paused_until, pause_until)
                if not retryable and not isinstance(exc, openai.APIStatusError):
                    log.warning("unexpected error from %s, not retried: %s", self.base_url, reason, exc_info=exc)
                if not retryable or attempt >= self.max_retries:
                    suffix = f" (after {attempt + 1} attempts)" if retryable else ""
                    return Generation.failure(f"{reason}{suffix}")
                delay = self._backoff(attempt, wait_hint)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    return Generation.failure(
                        f"WallTimeExceeded: next retry in {delay:.2f}s would pass max_wall_s={self.max_wall_s}s; "
                        f"last error {reason}"
                    )
                attempt += 1
                with self._stats_lock:
                    self.stats.retries += 1
                log.info("retry %d/%d of %s in %.2fs after %s", attempt, self.max_retries, self.model, delay, reason)
                await asyncio.sleep(delay)

    async def _attempt(self, request: Request, use_response_format: bool) -> Generation:
        params = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": request.seed,
        }
        if use_response_format:
            kwargs["response_format"] = {"type": "json_object"}
        extra_body = dict(self.extra_body)
        if request.messages and request.messages[-1]["role"] == "assistant":
            # Assistant prefill: vLLM and SGLang servers continue the final message when asked to.
            extra_body.update(continue_final_message=True, add_generation_prompt=False)
        if extra_body:
            kwargs["extra_body"] = extra_body
        raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
        try:
            completion = raw.parse()
        except ValueError as exc:  # json.JSONDecodeError: a 2xx whose body is not JSON
            raise MalformedResponse(f"body is not JSON ({exc})") from None
        return self._to_generation(request, completion)

    def _to_generation(self, request: Request, completion: Any) -> Generation:
        if isinstance(completion, (str, bytes)):
            raise MalformedResponse(f"body is not JSON: {str(completion)[:80]!r}")
        choices = getattr(completion, "choices", None)
        if not choices:
            raise MalformedResponse("reply has no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str):
            raise MalformedResponse("reply has no message content")
        text = content.strip()
        usage = getattr(completion, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        extra: dict[str, object] = {}
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            # Some servers omit usage; a whitespace estimate keeps budgets and costs roughly right, and is flagged.
            prompt_tokens = sum(self.count_tokens(m["content"]) for m in request.messages)
            completion_tokens = self.count_tokens(text)
            extra["usage_estimated"] = True
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason="length" if getattr(choice, "finish_reason", None) == "length" else "stop",
            cost_usd=self.cost(prompt_tokens, completion_tokens),
            extra=extra,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call under `price_per_million` (input, output); 0 where no price is known."""
        if self.price_per_million is None:
            return 0.0
        price_in, price_out = self.price_per_million
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000

    # ---------------------------------------------------------------- retry policy

    @staticmethod
    def _classify(exc: BaseException) -> tuple[bool, float | None]:
        """(retryable, server-requested wait in seconds or None)."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status >= 500 or status in _RETRYABLE_4XX:
                headers = exc.response.headers
                hint = None
                if "retry-after-ms" in headers:
                    try:
                        hint = max(0.0, float(headers["retry-after-ms"]) / 1000)
                    except ValueError:
                        hint = None
                if hint is None:
                    hint = parse_retry_after(headers.get("retry-after"))
                return True, hint
            return False, None
        if isinstance(exc, (openai.APIConnectionError, TimeoutError, MalformedResponse)):
            return True, None  # APITimeoutError is an APIConnectionError
        if isinstance(exc, openai.APIResponseValidationError):
            return True, None
        try:
            import httpx2  # the SDK's transport; a body cut off mid-read surfaces as its error, not the SDK's

            if isinstance(exc, httpx2.TransportError):
                return True, None
        except ImportError:  # pragma: no cover - depends on the SDK's transport
            pass
        return False, None

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"Timeout: no reply within timeout_s={self.timeout_s}s"
        if isinstance(exc, openai.APIStatusError):
            return f"{type(exc).__name__}: HTTP {exc.status_code} {str(exc.message)[:200]}"
        detail = str(exc)[:200] or "no detail"
        cause = exc.__cause__
        if isinstance(exc, openai.APIConnectionError) and cause is not None:
            detail += f" ({type(cause).__name__}: {str(cause)[:120]})"  # the SDK's message alone says nothing
        return f"{type(exc).__name__}: {detail}"

    def _backoff(self, attempt: int, hint: float | None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After wins (capped), so we never retry early."""
        if hint is not None:
            return min(hint, self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the HTTP client and stop the private loop thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop_thread.submit(self._client.close()).result(timeout=10)
        except Exception as exc:  # closing must not mask the caller's own error
            log.debug("closing the OpenAI client failed: %s", exc)
        self._loop_thread.stop()

    def __del__(self) -> None:
        """Best effort for a forgotten backend: stop its loop thread without blocking (it may run at shutdown)."""
        loop_thread = getattr(self, "_loop_thread", None)
        if loop_thread is not None and not getattr(self, "_closed", True) and not loop_thread.loop.is_closed():
            try:
                loop_thread.loop.call_soon_threadsafe(loop_thread.loop.stop)
            except RuntimeError:
                pass
