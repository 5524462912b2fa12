"""The request cache: keyed by identity, messages, sampling and sample index; shared safely across processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from collab.backends.cache import RequestCache, request_key
from collab.chat import Generation, SamplingParams

MESSAGES = [{"role": "user", "content": "hello"}]


def test_key_depends_on_everything_that_changes_a_sample() -> None:
    base = request_key("m@1", MESSAGES, SamplingParams(), 0)
    assert base == request_key("m@1", MESSAGES, SamplingParams(), 0)
    assert base == request_key("m@1", MESSAGES, SamplingParams(n=5), 0)  # n only counts samples
    for other in (
        request_key("m@2", MESSAGES, SamplingParams(), 0),
        request_key("m@1", [{"role": "user", "content": "hello!"}], SamplingParams(), 0),
        request_key("m@1", MESSAGES, SamplingParams(temperature=0.1), 0),
        request_key("m@1", MESSAGES, SamplingParams(seed=1), 0),
        request_key("m@1", MESSAGES, SamplingParams(), 1),
    ):
        assert other != base


def test_failures_are_never_cached(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.db")
    cache.put_many({"a": Generation.failure("Timeout: 60 s"), "b": Generation("ok", 1, 1)})
    assert set(cache.get_many(["a", "b"])) == {"b"}
    assert (cache.hits, cache.misses) == (1, 1)


def _writer(path: str, worker: int) -> None:
    cache = RequestCache(path)
    for i in range(200):
        cache.put_many({f"{worker}-{i}": Generation(f"text {worker} {i}", 3, 4)})


def test_concurrent_processes_write_without_losing_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    RequestCache(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = RequestCache(path)
    assert len(cache) == 800
    assert cache.get_many(["3-199"])["3-199"].text == "text 3 199"
