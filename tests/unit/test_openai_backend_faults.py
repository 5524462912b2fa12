"""OpenAIBackend against a real HTTP server that injects the faults long runs meet: every test asserts what went over
the wire (server counters) and what came back (texts, tokens, costs, stats), with timeouts and backoffs kept small."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from collab.backends.base import Request
from collab.backends.cache import RequestCache
from collab.backends.openai_backend import OpenAIBackend, parse_retry_after
from collab.chat import Conversation, SamplingParams, message
from collab.errors import CollabError
from tests.fault_server import MODEL_NAME, FaultConfig, FaultServer, count_words, reply_text

FAST: dict[str, Any] = {
    "api_key": "test-key",
    "timeout_s": 2.0,
    "max_retries": 2,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
}

MakeBackend = Callable[..., OpenAIBackend]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def make_backend(server: FaultServer) -> Iterator[MakeBackend]:
    """Backends on the fault server with fast timeouts; every one is closed after the test."""
    made: list[OpenAIBackend] = []

    def make(**kwargs: Any) -> OpenAIBackend:
        backend = OpenAIBackend(MODEL_NAME, base_url=server.base_url, **{**FAST, **kwargs})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def convo(text: str, system: str | None = None) -> Conversation:
    return ([message("system", system)] if system else []) + [message("user", text)]


def test_mixed_30_percent_faults_complete_a_40_request_batch_with_retries(
    server: FaultServer, make_backend: MakeBackend
) -> None:
    server.config = FaultConfig.mixed(0.3, seed=7, retry_after="0", hang_s=10)
    backend = make_backend(timeout_s=0.5, max_retries=8, concurrency=16)
    prompts = [convo(f"question number {i}") for i in range(20)]

    results = backend.generate(prompts, SamplingParams(n=2, seed=100))

    texts = [[g.text for g in gens] for gens in results]
    assert texts == [[f"echo {100 + k}: question number {i}" for k in range(2)] for i in range(20)]
    assert all(g.ok and g.error is None for gens in results for g in gens)
    faults = {name: count for name, count in server.stats.served.items() if name != "ok"}
    assert server.stats.served["ok"] == 40
    assert sum(faults.values()) > 0 and len(faults) >= 3, faults
    assert backend.stats.retries == sum(faults.values()) == server.stats.requests - 40
    assert backend.stats.failures == 0 and backend.stats.requests == 40


def test_retry_after_header_is_honoured(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(script=("429",), retry_after="1")
    backend = make_backend(backoff_base_s=0.01, backoff_max_s=5.0)

    start = time.monotonic()
    [[gen]] = backend.generate([convo("hello there")], SamplingParams())
    elapsed = time.monotonic() - start

    assert gen.ok and gen.text == "echo 0: hello there"
    assert server.stats.served == {"429": 1, "ok": 1}
    assert server.stats.arrivals[1] - server.stats.arrivals[0] >= 1.0
    assert 1.0 <= elapsed < 3.0
    assert backend.stats.retries == 1


def test_retry_after_is_capped_by_backoff_max(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(script=("429",), retry_after="30")
    backend = make_backend(backoff_max_s=0.2)

    start = time.monotonic()
    [[gen]] = backend.generate([convo("hi")], SamplingParams())

    assert gen.ok and time.monotonic() - start < 2.0
    assert 0.2 <= server.stats.arrivals[1] - server.stats.arrivals[0] < 2.0


def test_retry_after_http_date_is_seconds_from_now() -> None:
    now = 1_800_000_000.0
    header = format_datetime(datetime.fromtimestamp(now + 7, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(7.0)
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("retry_after", ["0.3", None], ids=["with-retry-after", "without-retry-after"])
def test_a_few_429s_then_success_complete_every_request_and_are_counted(
    server: FaultServer, make_backend: MakeBackend, retry_after: str | None
) -> None:
    # The first four arrivals are 429s (so some requests meet two in a row), then the server recovers.
    server.config = FaultConfig(script=("429",) * 4, retry_after=retry_after, latency_s=0.02)
    backend = make_backend(max_retries=4, concurrency=3, backoff_base_s=0.05, backoff_max_s=1.0)

    start = time.monotonic()
    results = backend.generate([convo(f"q{i}") for i in range(6)], SamplingParams())
    elapsed = time.monotonic() - start

    gens = [g for gens in results for g in gens]
    assert [g.text for g in gens] == [f"echo 0: q{i}" for i in range(6)]
    assert all(g.ok for g in gens)
    assert server.stats.served == {"429": 4, "ok": 6}
    assert backend.stats.rate_limited == 4 and backend.stats.retries == 4
    assert backend.stats.failures == 0 and backend.stats.requests == 6
    # With Retry-After 0.3 s: the first three 429s and then the fourth (met by a retry) each wait it out.
    assert (0.6 if retry_after else 0.0) <= elapsed < 5.0


def test_retry_after_of_one_429_holds_back_the_backends_other_request_starts(
    server: FaultServer, make_backend: MakeBackend
) -> None:
    # q0 gets a 429 (Retry-After 0.3 s) while q1 is served; q2 takes q1's place but must not start before 0.3 s.
    server.config = FaultConfig(script=("429",), retry_after="0.3", latency_s=0.05)
    backend = make_backend(concurrency=2, backoff_max_s=1.0)

    results = backend.generate([convo(f"s{i}") for i in range(3)], SamplingParams())

    assert all(g.ok for gens in results for g in gens)
    arrivals = server.stats.arrivals
    assert len(arrivals) == 4 and arrivals[1] - arrivals[0] < 0.2
    assert arrivals[2] - arrivals[0] >= 0.3
    assert backend.stats.rate_limited == 1


def test_429_beyond_the_retry_budget_is_a_named_failure_not_an_empty_success(
    server: FaultServer, make_backend: MakeBackend
) -> None:
    server.config = FaultConfig(rate_429=1.0, retry_after="0")
    backend = make_backend(max_retries=2)

    [[gen]] = backend.generate([convo("again")], SamplingParams())

    assert not gen.ok and gen.text == "" and gen.finish_reason == "error"
    assert gen.error is not None and gen.error.startswith("RateLimitError: HTTP 429")
    assert "after 3 attempts" in gen.error
    assert server.stats.served == {"429": 3}
    assert backend.stats.rate_limited == 3 and backend.stats.retries == 2
    assert backend.stats.failure_reasons == {"RateLimitError": 1}


def test_always_500_fails_after_exactly_max_retries_plus_one_attempts(
    server: FaultServer, make_backend: MakeBackend
) -> None:
    server.config = FaultConfig(rate_500=1.0)
    backend = make_backend(max_retries=3)

    results = backend.generate([convo("a"), convo("b")], SamplingParams())

    gens = [g for gens in results for g in gens]
    assert [g.ok for g in gens] == [False, False]
    assert all(g.text == "" and g.finish_reason == "error" for g in gens)
    assert all(g.error is not None and g.error.startswith("InternalServerError: HTTP 500") for g in gens)
    assert all("after 4 attempts" in (g.error or "") for g in gens)
    assert server.stats.requests == 8 and server.stats.served == {"500": 8}
    assert backend.stats.retries == 6
    assert backend.stats.failures == 2 and backend.stats.failure_reasons == {"InternalServerError": 2}


def test_hang_past_timeout_is_retried_and_succeeds(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(script=("hang",), hang_s=10)
    backend = make_backend(timeout_s=0.3)

    start = time.monotonic()
    [[gen]] = backend.generate([convo("are you there")], SamplingParams())

    assert gen.ok and gen.text == "echo 0: are you there"
    assert gen.extra["retries"] == 1
    assert 0.3 <= time.monotonic() - start < 2.0
    assert server.stats.served == {"hang": 1, "ok": 1}
    assert backend.stats.retries == 1


def test_max_wall_s_bounds_a_request_that_keeps_hanging(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(rate_hang=1.0, hang_s=10)
    backend = make_backend(timeout_s=0.3, max_retries=50, max_wall_s=1.0)

    start = time.monotonic()
    [[gen]] = backend.generate([convo("stuck")], SamplingParams())
    elapsed = time.monotonic() - start

    assert not gen.ok and gen.error is not None and gen.error.startswith("WallTimeExceeded")
    assert 0.9 <= elapsed < 1.6
    assert 3 <= server.stats.requests <= 4  # ~0.3 s per attempt inside a 1 s budget
    assert backend.stats.failure_reasons == {"WallTimeExceeded": 1}


def test_400_is_not_retried(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(rate_400=1.0)
    backend = make_backend(max_retries=4)

    [[gen]] = backend.generate([convo("bad")], SamplingParams())

    assert not gen.ok and (gen.error or "").startswith("BadRequestError: HTTP 400")
    assert "injected bad request" in (gen.error or "")
    assert server.stats.requests == 1
    assert backend.stats.retries == 0


@pytest.mark.parametrize("fault", ["truncated", "non_json", "empty_choices"])
def test_malformed_reply_is_retried_then_succeeds(
    fault: str, server: FaultServer, make_backend: MakeBackend
) -> None:
    server.config = FaultConfig(script=(fault,))
    backend = make_backend()

    [[gen]] = backend.generate([convo("tell me")], SamplingParams())

    assert gen.ok and gen.text == "echo 0: tell me"
    assert server.stats.served == {fault: 1, "ok": 1}
    assert backend.stats.retries == 1


def test_malformed_reply_every_time_is_a_failure_not_an_empty_success(
    server: FaultServer, make_backend: MakeBackend
) -> None:
    server.config = FaultConfig(rate_empty_choices=1.0)
    backend = make_backend(max_retries=1)

    [[gen]] = backend.generate([convo("tell me")], SamplingParams())

    assert not gen.ok and (gen.error or "").startswith("MalformedResponse: reply has no choices")
    assert server.stats.requests == 2


def test_concurrency_limit_caps_requests_in_flight(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(latency_s=0.1)
    backend = make_backend(concurrency=3)

    results = backend.generate([convo(f"p{i}") for i in range(12)], SamplingParams())

    assert all(g.ok for gens in results for g in gens)
    assert server.stats.requests == 12
    assert server.stats.max_in_flight == 3


def test_concurrency_cap_holds_while_requests_are_retried(server: FaultServer, make_backend: MakeBackend) -> None:
    # Retries (429 and 500) re-enter the server; a request waiting out its backoff still holds its place.
    server.config = FaultConfig(rate_429=0.3, rate_500=0.2, retry_after="0.05", latency_s=0.05, seed=3)
    backend = make_backend(concurrency=4, max_retries=10)

    results = backend.generate([convo(f"r{i}") for i in range(16)], SamplingParams())

    assert all(g.ok for gens in results for g in gens)
    assert server.stats.requests > 16  # some were retried
    assert server.stats.max_in_flight == 4
    assert backend.stats.rate_limited == server.stats.served["429"]


def test_requests_per_minute_spaces_request_starts(server: FaultServer, make_backend: MakeBackend) -> None:
    backend = make_backend(requests_per_minute=300, concurrency=16)  # one request every 0.2 s

    results = backend.generate([convo(f"p{i}") for i in range(5)], SamplingParams())

    assert all(g.ok for gens in results for g in gens)
    arrivals = server.stats.arrivals
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert len(gaps) == 4 and min(gaps) >= 0.18, gaps
    assert arrivals[-1] - arrivals[0] >= 0.78


def test_requests_per_minute_counts_retries_too(server: FaultServer, make_backend: MakeBackend) -> None:
    # 2 requests, the first arrival a 429 with Retry-After 0: 3 attempts, all spaced by the 0.25 s budget.
    server.config = FaultConfig(script=("429",), retry_after="0")
    backend = make_backend(requests_per_minute=240, concurrency=2)

    results = backend.generate([convo("x"), convo("y")], SamplingParams())

    assert all(g.ok for gens in results for g in gens)
    arrivals = server.stats.arrivals
    assert len(arrivals) == 3
    assert min(b - a for a, b in zip(arrivals, arrivals[1:])) >= 0.23


def test_usage_and_price_give_cost(server: FaultServer, make_backend: MakeBackend) -> None:
    backend = make_backend(price_per_million=(2.0, 10.0))

    [[gen]] = backend.generate([convo("add two and three", system="You are terse.")], SamplingParams())

    assert gen.text == "echo 0: add two and three"
    assert (gen.prompt_tokens, gen.completion_tokens) == (7, 6)  # server counts whitespace words
    assert gen.cost_usd == pytest.approx((7 * 2.0 + 6 * 10.0) / 1e6)
    assert "usage_estimated" not in gen.extra
    assert backend.stats.cost_usd == pytest.approx(74e-6)
    assert (backend.stats.prompt_tokens, backend.stats.completion_tokens) == (7, 6)


def test_missing_usage_is_estimated_and_flagged(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(include_usage=False)
    backend = make_backend(price_per_million=(1.0, 1.0))

    [[gen]] = backend.generate([convo("one two three")], SamplingParams())

    assert gen.extra["usage_estimated"] is True
    assert (gen.prompt_tokens, gen.completion_tokens) == (3, count_words("echo 0: one two three"))
    assert gen.cost_usd == pytest.approx(8 / 1e6)


def test_length_limit_maps_to_finish_reason_length(server: FaultServer, make_backend: MakeBackend) -> None:
    backend = make_backend()

    [[cut], [whole]] = backend.generate(
        [convo("a long question here"), convo("ok")], SamplingParams(max_new_tokens=3)
    )

    assert (cut.text, cut.finish_reason) == ("echo 0: a", "length")
    assert (whole.text, whole.finish_reason) == ("echo 0: ok", "stop")


def test_sampling_params_and_extra_body_reach_the_server(server: FaultServer, make_backend: MakeBackend) -> None:
    backend = make_backend(extra_body={"top_k": 5})

    backend.generate([convo("x")], SamplingParams(max_new_tokens=50, temperature=0.3, top_p=0.9, n=2, seed=10))

    bodies = sorted(server.stats.bodies, key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [10, 11]
    for body in bodies:
        assert body["model"] == MODEL_NAME
        assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (50, 0.3, 0.9, 5)
        assert body["messages"] == [{"role": "user", "content": "x"}]
        assert "response_format" not in body


def test_json_mode_sends_response_format_and_returns_json(server: FaultServer, make_backend: MakeBackend) -> None:
    backend = make_backend()

    [[gen]] = backend.generate([convo("give json")], SamplingParams(json_mode=True))

    assert server.stats.bodies[0]["response_format"] == {"type": "json_object"}
    assert json.loads(gen.text) == {"echo": "give json", "seed": 0}


def test_json_mode_falls_back_once_when_server_rejects_response_format(
    server: FaultServer, make_backend: MakeBackend
) -> None:
    server.config = FaultConfig(reject_response_format=True)
    backend = make_backend()

    [[first]] = backend.generate([convo("one")], SamplingParams(json_mode=True))
    assert first.ok and first.text == reply_text([{"role": "user", "content": "one"}], 0, json_mode=False)
    assert first.extra["json_mode_unsupported"] is True
    assert server.stats.served == {"reject_response_format": 1, "ok": 1}
    assert backend.supports_response_format is False

    [[second]] = backend.generate([convo("two")], SamplingParams(json_mode=True))
    assert second.ok and server.stats.requests == 3  # remembered: no second rejected attempt
    assert "response_format" not in server.stats.bodies[-1]


def test_cache_hit_makes_no_http_request(server: FaultServer, make_backend: MakeBackend, tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "cache.sqlite")
    backend = make_backend(cache=cache)
    prompts = [convo("first"), convo("second")]

    fresh = backend.generate(prompts, SamplingParams(n=2))
    assert server.stats.requests == 4 and backend.stats.cache_hits == 0
    again = backend.generate(prompts, SamplingParams(n=2))

    assert server.stats.requests == 4
    assert backend.stats.cache_hits == 4
    assert [[g.text for g in gens] for gens in again] == [[g.text for g in gens] for gens in fresh]
    assert all(g.cached for gens in again for g in gens)
    cache.close()


def test_api_key_never_in_repr_str_identity_or_cache_file(
    server: FaultServer, make_backend: MakeBackend, tmp_path: Path
) -> None:
    secret = "sk-test-SECRET-5f3a9c"
    cache = RequestCache(tmp_path / "cache.sqlite")
    backend = make_backend(api_key=secret, cache=cache)

    [[gen]] = backend.generate([convo("hi")], SamplingParams())

    assert gen.ok
    assert server.stats.authorizations == [f"Bearer {secret}"]  # the key was really used...
    for shown in (repr(backend), str(backend), backend.identity, repr(backend.stats)):
        assert secret not in shown  # ...but never shown
    assert backend.identity == f"openai:{server.base_url}:{MODEL_NAME}"
    cache.close()
    files = list(tmp_path.glob("cache.sqlite*"))
    assert files and all(secret.encode() not in f.read_bytes() for f in files)
    assert secret not in json.dumps([str(v) for k, v in vars(backend).items() if k != "_client"])


def test_api_key_comes_from_named_env_var(
    server: FaultServer, make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_TEST_KEY", "from-env")
    backend = make_backend(api_key=None, api_key_env="COLLAB_TEST_KEY")

    backend.generate([convo("hi")], SamplingParams())

    assert server.stats.authorizations == ["Bearer from-env"]


def test_loopback_without_key_uses_placeholder(
    server: FaultServer, make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = make_backend(api_key=None)

    backend.generate([convo("hi")], SamplingParams())

    assert server.stats.authorizations == ["Bearer EMPTY"]


def test_remote_endpoint_without_key_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLLAB_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(CollabError, match="COLLAB_TEST_NO_SUCH_KEY"):
        OpenAIBackend("gpt-x", base_url="https://api.example.com/v1", api_key_env="COLLAB_TEST_NO_SUCH_KEY")


def test_wrong_api_key_401_is_not_retried(server: FaultServer, make_backend: MakeBackend) -> None:
    server.config = FaultConfig(required_api_key="right")
    backend = make_backend(api_key="wrong", max_retries=3)

    [[gen]] = backend.generate([convo("hi")], SamplingParams())

    assert not gen.ok and (gen.error or "").startswith("AuthenticationError: HTTP 401")
    assert server.stats.requests == 1


def test_generate_works_inside_a_running_event_loop(server: FaultServer, make_backend: MakeBackend) -> None:
    backend = make_backend()

    async def main() -> tuple[str, str]:
        [[sync_gen]] = backend.generate([convo("from sync")], SamplingParams())
        [async_gen] = await backend.agenerate_requests([Request(convo("from async"), SamplingParams(), 0)])
        return sync_gen.text, async_gen.text

    assert asyncio.run(main()) == ("echo 0: from sync", "echo 0: from async")
    assert backend.stats.requests == 2


def test_close_stops_the_loop_thread_and_is_idempotent(server: FaultServer) -> None:
    backend = OpenAIBackend(MODEL_NAME, base_url=server.base_url, **FAST)
    backend.generate([convo("hi")], SamplingParams())
    thread = backend._loop_thread._thread

    backend.close()
    backend.close()

    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([convo("again")], SamplingParams())
