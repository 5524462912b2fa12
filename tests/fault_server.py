"""A fault-injecting OpenAI-compatible chat server for tests (stdlib only, loopback, port 0, background thread).

Why a real HTTP server and not a mocked SDK: the failures a long run meets (rate limits with Retry-After, 5xx, hung
connections, bodies cut off mid-transfer, HTML error pages with a 200, replies without choices) happen on the wire,
and only a real socket exercises the SDK's transport, our timeouts and our retry classification together.

Faults are chosen deterministically: the first requests follow `FaultConfig.script` (in arrival order); after that a
request's fault is drawn from a RNG seeded by (config seed, request body, how many times that body was seen before),
so a retried request rolls again, and a whole batch behaves the same whatever order the requests arrive in.

Replies are a deterministic echo of the last user message (see `reply_text`), or a JSON object when the request asks
for `response_format={"type": "json_object"}`, so tests can assert exact texts and token counts.

Usage::

    with FaultServer(FaultConfig.mixed(0.3, seed=1)) as server:
        backend = OpenAIBackend("fault-echo", base_url=server.base_url)
        ...
        assert server.stats.served["ok"] == 40
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MODEL_NAME = "fault-echo"

# The transient faults `FaultConfig.mixed` spreads a total rate over, in the order the RNG checks them.
TRANSIENT_FAULTS = ("429", "500", "hang", "truncated", "non_json", "empty_choices")
# Every outcome name that can appear in `script` and in `ServerStats.served`.
OUTCOMES = (*TRANSIENT_FAULTS, "400", "ok")


@dataclass
class FaultConfig:
    """What the server does wrong, and how often. Rates are probabilities per request (summing to at most 1)."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_truncated: float = 0.0
    rate_non_json: float = 0.0
    rate_empty_choices: float = 0.0
    rate_400: float = 0.0
    retry_after: str | None = "1"  # Retry-After header sent with every 429 (seconds or an HTTP-date); None: none
    hang_s: float = 5.0  # how long a "hang" stalls before answering (cut short when the server stops)
    latency_s: float = 0.0  # added to every request, so concurrency is observable
    seed: int = 0
    script: tuple[str, ...] = ()  # outcomes for the first requests, in arrival order ("ok" = no fault)
    include_usage: bool = True
    reject_response_format: bool = False  # answer 400 to any request carrying response_format
    required_api_key: str | None = None  # if set, other Authorization headers get 401

    @classmethod
    def mixed(cls, total_rate: float, seed: int = 0, **overrides: Any) -> FaultConfig:
        """`total_rate` spread evenly over the six transient faults (429, 500, hang, truncated, non-JSON, empty)."""
        share = total_rate / len(TRANSIENT_FAULTS)
        rates = {f"rate_{name}": share for name in TRANSIENT_FAULTS}
        return cls(seed=seed, **{**rates, **overrides})

    def rates(self) -> list[tuple[str, float]]:
        return [(name, getattr(self, f"rate_{name}")) for name in (*TRANSIENT_FAULTS, "400")]

    def __post_init__(self) -> None:
        unknown = [s for s in self.script if s not in OUTCOMES]
        if unknown:
            raise ValueError(f"unknown outcomes in script: {unknown}; known: {OUTCOMES}")
        if sum(rate for _, rate in self.rates()) > 1.0 + 1e-9:
            raise ValueError("fault rates sum to more than 1")


@dataclass
class ServerStats:
    """What the server saw and served. Read it after the client is done (it is updated under the server's lock)."""

    requests: int = 0  # POSTs to /v1/chat/completions received (every attempt of every request)
    served: Counter[str] = field(default_factory=Counter)  # outcome name -> count
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() at each request's arrival
    bodies: list[dict[str, Any]] = field(default_factory=list)  # parsed request bodies, in arrival order
    authorizations: list[str] = field(default_factory=list)  # Authorization headers, in arrival order


def last_user_message(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def reply_text(messages: list[dict[str, Any]], seed: int | None, json_mode: bool) -> str:
    """The server's deterministic answer: the last user message echoed with the seed (so samples differ)."""
    user = last_user_message(messages)
    if json_mode:
        return json.dumps({"echo": user, "seed": seed})
    return f"echo {seed}: {user}"


def count_words(text: str) -> int:
    """The server's 'tokenizer': whitespace words, so tests can predict usage exactly."""
    return len(text.split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}})
            return
        outcome = self.server.admit(body, self.headers.get("Authorization", ""))
        try:
            self._serve(outcome, body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to answer
            self.close_connection = True
        finally:
            self.server.leave()

    def _serve(self, outcome: str, body: dict[str, Any]) -> None:
        config = self.server.config
        if config.latency_s:
            self.server.stopping.wait(config.latency_s)
        if outcome == "401":
            self._send_json(401, {"error": {"message": "bad api key", "type": "invalid_api_key"}})
        elif outcome == "429":
            self._send_json(
                429,
                {"error": {"message": "injected rate limit", "type": "rate_limit_exceeded"}},
                {"Retry-After": config.retry_after} if config.retry_after is not None else None,
            )
        elif outcome == "500":
            self._send_json(500, {"error": {"message": "injected server error", "type": "server_error"}})
        elif outcome == "400":
            self._send_json(400, {"error": {"message": "injected bad request", "type": "invalid_request_error"}})
        elif outcome == "reject_response_format":
            self._send_json(
                400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
            )
        elif outcome == "non_json":
            self._send_bytes(200, b"<html><body>502 Bad Gateway</body></html>", "application/json")
        elif outcome == "empty_choices":
            completion = self._completion(body)
            completion["choices"] = []
            self._send_json(200, completion)
        elif outcome == "truncated":
            data = json.dumps(self._completion(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # promise the whole body, deliver half, hang up
            self.wfile.flush()
            self.close_connection = True
        else:
            if outcome == "hang":
                self.server.stopping.wait(config.hang_s)
            self._send_json(200, self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        text = reply_text(messages, body.get("seed"), json_mode)
        words = text.split()
        max_tokens = body.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        completion: dict[str, Any] = {
            "id": f"chatcmpl-{self.server.stats.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL_NAME),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
        }
        if self.server.config.include_usage:
            prompt = sum(count_words(str(m.get("content", ""))) for m in messages)
            completion["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": count_words(text),
                "total_tokens": prompt + count_words(text),
            }
        return completion

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default listen backlog (5) drops bursts of connects, which look like timeouts

    def __init__(self, config: FaultConfig) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.config = config
        self.stats = ServerStats()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def admit(self, body: dict[str, Any], authorization: str) -> str:
        """Record the arrival and decide its outcome."""
        with self._lock:
            stats = self.stats
            index = stats.requests
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            stats.arrivals.append(time.monotonic())
            stats.bodies.append(body)
            stats.authorizations.append(authorization)
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            attempt = self._seen[digest]
            self._seen[digest] += 1
            outcome = self._choose(index, digest, attempt, body, authorization)
            stats.served[outcome] += 1
            return outcome

    def leave(self) -> None:
        with self._lock:
            self.stats.in_flight -= 1

    def _choose(self, index: int, digest: str, attempt: int, body: dict[str, Any], authorization: str) -> str:
        config = self.config
        if config.required_api_key is not None and authorization != f"Bearer {config.required_api_key}":
            return "401"
        if index < len(config.script):
            return config.script[index]
        if config.reject_response_format and "response_format" in body:
            return "reject_response_format"
        roll = random.Random(f"{config.seed}:{digest}:{attempt}").random()
        for name, rate in config.rates():
            if roll < rate:
                return name
            roll -= rate
        return "ok"


class FaultServer:
    """Runs `_Server` in a daemon thread; use as a context manager. `config` may be swapped between calls."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._server = _Server(config or FaultConfig())
        # A short poll interval makes `stop()` (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-server", daemon=True
        )

    @property
    def config(self) -> FaultConfig:
        return self._server.config

    @config.setter
    def config(self, value: FaultConfig) -> None:
        self._server.config = value

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_stats(self) -> None:
        with self._server._lock:
            self._server.stats = ServerStats()

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()  # releases hung and slow handlers at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = [
    "MODEL_NAME",
    "OUTCOMES",
    "TRANSIENT_FAULTS",
    "FaultConfig",
    "FaultServer",
    "ServerStats",
    "count_words",
    "last_user_message",
    "reply_text",
]
