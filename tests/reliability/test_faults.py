"""An endpoint that fails 30% of the time (429 with Retry-After, 500, hangs, truncated and non-JSON bodies, empty
choices): MR computations and data runs complete, every failure is counted, retries are bounded, a failed MR is
None with its reason (never a 0), and no call outlasts its wall-time bound."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collab.backends.base import Request
from collab.backends.openai_backend import OpenAIBackend
from collab.chat import Generation, message
from collab.config import RewardConfig
from collab.reward import Candidate, MRResult, MultiturnReward
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.jsonl import load_tasks_jsonl
from tests.fault_server import MODEL_NAME, TRANSIENT_FAULTS, FaultConfig, FaultServer
from tests.reliability.conftest import data_recipe, jsonl_rows, run_collab, write_qa_tasks, write_yaml

FAST = {"timeout_s": 3.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "concurrency": 64}
REWARD = RewardConfig(window=2, samples=6, policy_temperature=0.0, policy_max_new_tokens=32)


@pytest.fixture
def tasks(tmp_path: Path) -> list[Any]:
    return load_tasks_jsonl(write_qa_tasks(tmp_path / "qa.jsonl", 12))


def candidates_for(tasks: list[Any]) -> list[Candidate]:
    """An asking and an answering candidate for every task."""
    out = []
    for task in tasks:
        history = [message("user", task.opening)]
        out += [Candidate(task, history, "Could you tell me more about the club?"),
                Candidate(task, history, f"The answer is {task.answer}.")]
    return out


class TimedBackend(OpenAIBackend):
    """Records how long every batched call took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_seconds: list[float] = []

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        began = time.monotonic()
        try:
            return super()._generate_batch(requests)
        finally:
            self.batch_seconds.append(time.monotonic() - began)


@pytest.fixture
def backends() -> Iterator[list[OpenAIBackend]]:
    made: list[OpenAIBackend] = []
    yield made
    for backend in made:
        backend.close()


def mr_on(server: FaultServer, backends: list[OpenAIBackend], tasks: list[Any], **options: Any
          ) -> tuple[list[MRResult], MultiturnReward, TimedBackend]:
    backend = TimedBackend(MODEL_NAME, base_url=server.base_url, **{**FAST, **options})
    backends.append(backend)
    reward = MultiturnReward(backend, ShardedSimulator(max_turns=4), REWARD)
    return reward.score(candidates_for(tasks), seed=5), reward, backend


def faults_served(server: FaultServer) -> int:
    return sum(n for outcome, n in server.stats.served.items() if outcome != "ok")


def attempts_per_request(server: FaultServer) -> Counter[str]:
    return Counter(hashlib.sha256(json.dumps(b, sort_keys=True).encode()).hexdigest() for b in server.stats.bodies)


def test_mr_under_30_percent_faults_equals_the_fault_free_mr_with_every_retry_counted(
    faulty_server: FaultServer, echo_server: FaultServer, backends: list[OpenAIBackend], tasks: list[Any]
) -> None:
    want, _, clean = mr_on(echo_server, backends, tasks)
    got, reward, backend = mr_on(faulty_server, backends, tasks, max_retries=8)

    assert [r.mr for r in got] == [r.mr for r in want] and all(r.mr is not None for r in got)
    assert [[x.messages for x in r.rollouts] for r in got] == [[x.messages for x in r.rollouts] for r in want]
    calls = clean.stats.requests
    served = faulty_server.stats.served
    assert calls >= 100 and served["ok"] == backend.stats.requests == calls and backend.stats.failures == 0
    assert set(served) - {"ok"} == set(TRANSIENT_FAULTS)  # every kind of fault was met and survived
    assert backend.stats.retries == faults_served(faulty_server) == faulty_server.stats.requests - calls
    assert faults_served(faulty_server) >= 0.25 * calls
    assert reward.stats.failed_rollouts == 0 and reward.stats.rollouts == 24 * 6


def test_failed_calls_make_mr_none_with_the_reason_and_are_left_out_of_the_mean_never_scored_0(
    faulty_server: FaultServer, echo_server: FaultServer, backends: list[OpenAIBackend], tasks: list[Any]
) -> None:
    want, _, _ = mr_on(echo_server, backends, tasks)
    got, reward, backend = mr_on(faulty_server, backends, tasks, max_retries=0)  # every fault is a failure

    failed_rollouts = [x for r in got for x in r.rollouts if x.error is not None]
    assert 0 < len(failed_rollouts) < 24 * 6
    assert any(r.mr is not None and r.failed_rollouts for r in got)  # (all rollouts failed: the next test)
    assert backend.stats.failures == faults_served(faulty_server) > 0 and backend.stats.retries == 0
    assert sum(backend.stats.failure_reasons.values()) == backend.stats.failures
    assert reward.stats.failed_rollouts == len(failed_rollouts)
    for result, reference in zip(got, want):
        good = [x for x in result.rollouts if x.error is None]
        assert result.failed_rollouts == len(result.rollouts) - len(good)
        for rollout, clean in zip(result.rollouts, reference.rollouts):
            if rollout.error is None:  # a rollout that succeeded is exactly the fault-free one
                assert rollout.reward == clean.reward
            else:
                assert rollout.reward is None and rollout.components == {}
                assert rollout.error.startswith("policy: ")
        if good:
            assert result.mr == pytest.approx(statistics.fmean(x.reward for x in good))
        else:
            assert result.mr is None and result.error and result.error.startswith("policy: ")
    reasons = {x.error.split(": ")[1] for x in failed_rollouts}
    assert reasons <= {"RateLimitError", "InternalServerError", "Timeout", "MalformedResponse", "APIConnectionError",
                       "APIResponseValidationError"}, reasons


def test_retries_stop_at_max_retries_and_the_failure_says_how_many_attempts(
    backends: list[OpenAIBackend], tasks: list[Any]
) -> None:
    with FaultServer(FaultConfig(rate_500=1.0)) as server:
        results, reward, backend = mr_on(server, backends, tasks[:2], max_retries=3)

    attempts = attempts_per_request(server)
    assert len(attempts) == backend.stats.requests == backend.stats.failures > 0
    assert set(attempts.values()) == {4}  # 1 attempt + 3 retries, for every request, then it fails
    assert backend.stats.retries == 3 * backend.stats.failures
    assert backend.stats.failure_reasons == {"InternalServerError": backend.stats.failures}
    failed = [r for r in results if r.mr is None]
    assert failed and reward.stats.failed_candidates == len(failed)
    assert {r.error for r in failed} == {
        "policy: InternalServerError: HTTP 500 Error code: 500 - injected server error (after 4 attempts)"}


def test_no_call_stalls_past_max_wall_s_when_the_server_hangs(
    backends: list[OpenAIBackend], tasks: list[Any]
) -> None:
    with FaultServer(FaultConfig.mixed(0.3, seed=4, retry_after="0.05", hang_s=60)) as server:
        # The per-attempt timeout alone would let a hung call wait 30 s; max_wall_s bounds the whole call.
        results, _, backend = mr_on(server, backends, tasks, timeout_s=30, max_retries=8, max_wall_s=1.0)

    assert server.stats.served["hang"] > 0
    assert max(backend.batch_seconds) < 1.0 + 0.75, backend.batch_seconds
    walled = [x.error for r in results for x in r.rollouts if x.error and "WallTimeExceeded" in x.error]
    assert walled and backend.stats.failure_reasons == {"WallTimeExceeded": backend.stats.failures}


def test_data_run_against_a_30_percent_faulty_endpoint_completes_and_its_summary_counts_every_failure(
    tmp_path: Path, faulty_server: FaultServer
) -> None:
    run_dir = tmp_path / "run"
    recipe = write_yaml(tmp_path / "recipe.yaml", data_recipe(
        run_dir, faulty_server.base_url, write_qa_tasks(tmp_path / "qa.jsonl", 8),
        policy={"timeout_s": 3.0, "max_retries": 1, "max_wall_s": 8.0, "concurrency": 64}))

    began = time.monotonic()
    result = run_collab("data", str(recipe), timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = json.loads((run_dir / "data" / "store" / "shard-0000-of-0001.summary.json").read_text())
    policy = summary["policy"]
    server = faulty_server.stats
    # Every attempt reached the server; each fault was either retried or became a counted failure.
    assert server.requests == policy["requests"] + policy["retries"]
    assert faults_served(faulty_server) == policy["retries"] + policy["failures"]
    assert server.served["ok"] == policy["requests"] - policy["failures"]
    assert policy["failures"] > 0 and sum(policy["failure_reasons"].values()) == policy["failures"]
    assert max(attempts_per_request(faulty_server).values()) <= 2  # max_retries: 1
    records = jsonl_rows(run_dir / "data" / "store" / "shard-0000-of-0001.jsonl")
    candidates = [c for r in records for c in r["candidates"]]
    rollouts = [x for c in candidates for x in c["rollouts"]]
    assert summary["reward"]["failed_rollouts"] == sum(x["error"] is not None for x in rollouts) > 0
    assert summary["reward"]["failed_candidates"] == sum(c["mr"] is None for c in candidates)
    for c in candidates:
        good = [x["reward"] for x in c["rollouts"] if x["error"] is None]
        assert all(x["reward"] is None for x in c["rollouts"] if x["error"] is not None)
        if c["truncated"]:
            assert c["mr"] == -1.0 and c["rollouts"] == []
        elif good:
            assert c["mr"] == pytest.approx(statistics.fmean(good))
        else:
            assert c["mr"] is None and c["error"]
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["failed_candidates"] == summary["reward"]["failed_candidates"]
    assert (run_dir / "data" / "DONE").is_file()
    assert time.monotonic() - began < 120
