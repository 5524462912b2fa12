"""The MR reward function of the online stages, with a scripted policy backend and the sharded user: truncation,
one batched score per call at the current step's revision, failures returned as None, the logged breakdown and the
sample log."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from collab.backends.base import Backend, Request
from collab.chat import Generation
from collab.config import RewardConfig
from collab.reward import Candidate, MRResult, MultiturnReward, RolloutScore
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.registry import load_task_set
from collab.train.online_reward import (
    AsyncMRRewardFunction,
    BreakdownTotals,
    MRRewardFunction,
    SampleLog,
    breakdown_metrics,
    is_truncated,
    record_batch,
)

EOS = 2
TASKS = load_task_set("clarify-math", split="train", limit=2)  # 00000 needs clarification, 00001 does not
NEEDS, CLEAR = TASKS


class ScriptedPolicy(Backend):
    """Replies with a fixed text (or fails), and records requests and the revision they were made at."""

    def __init__(self, reply: str = "The answer is 66.", fail: bool = False) -> None:
        super().__init__("scripted")
        self.reply, self.fail = reply, fail
        self.revision = "0"
        self.seen_revisions: list[str] = []

    @property
    def identity(self) -> str:
        return f"scripted@{self.revision}"

    def set_revision(self, revision: str | int) -> None:
        self.revision = str(revision)

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        self.seen_revisions += [self.revision] * len(requests)
        if self.fail:
            return [Generation.failure("server down: 503") for _ in requests]
        return [Generation(text=self.reply, completion_tokens=5) for _ in requests]


class RecordingPolicy:
    """A LivePolicy around a backend that records the steps of its sessions."""

    def __init__(self, backend: ScriptedPolicy) -> None:
        self.backend = backend
        self.steps: list[int] = []

    @contextlib.contextmanager
    def session(self, step: int) -> Iterator[Backend]:
        self.steps.append(step)
        self.backend.set_revision(step)
        yield self.backend


def make_function(policy: ScriptedPolicy, tmp_path: Path | None = None, every: int = 2,
                  cls: type[MRRewardFunction] = MRRewardFunction,
                  config: RewardConfig | None = None) -> tuple[MRRewardFunction, MultiturnReward, RecordingPolicy]:
    config = config or RewardConfig(window=1, samples=2, truncation_penalty=-0.5)
    reward = MultiturnReward(policy, ShardedSimulator(), config)
    live = RecordingPolicy(policy)
    samples = SampleLog(tmp_path / "samples.jsonl", every) if tmp_path is not None else None
    function = cls(tasks={t.id: t for t in TASKS}, seed=1, samples=samples)
    function.attach(reward, live, [EOS])
    return function, reward, live


def batch(texts: list[str], ended: list[bool], tasks: list[str]) -> dict[str, object]:
    return {
        "prompts": [[{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": next(t for t in TASKS if t.id == tid).opening}] for tid in tasks],
        "completions": [[{"role": "assistant", "content": text}] for text in texts],
        "completion_ids": [[11, 12, EOS] if end else [11, 12, 13] for end in ended],
        "task_id": tasks,
    }


def test_truncation_is_no_stop_token_among_the_completion_ids() -> None:
    assert is_truncated([5, 6, 7], {EOS}) and not is_truncated([5, EOS], {EOS}) and not is_truncated([5, EOS, EOS], {EOS})


def test_truncated_completion_gets_the_penalty_without_rollouts() -> None:
    policy = ScriptedPolicy()
    function, _, _ = make_function(policy)

    rewards = function(**batch(["How many apples are in each box?", "Mia has"], [True, False], [NEEDS.id, NEEDS.id]),
                       trainer_state=SimpleNamespace(global_step=0))

    assert rewards[1] == -0.5
    assert rewards[0] is not None and rewards[0] != -0.5
    assert len(policy.seen_revisions) == 2  # window 1 x samples 2, all for the first completion
    metrics = function.drain()
    assert metrics["mr/truncated_rate"] == 0.5 and metrics["mr/rollouts"] == 2


def test_whole_batch_is_one_score_call_at_the_current_steps_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = ScriptedPolicy()
    function, reward, live = make_function(policy)
    sizes: list[int] = []
    original = reward.score
    monkeypatch.setattr(reward, "score", lambda cands, seed=0: sizes.append(len(cands)) or original(cands, seed=seed))

    function(**batch(["Could you tell me how many apples are in each box?"] * 4, [True] * 4,
                     [NEEDS.id, NEEDS.id, CLEAR.id, CLEAR.id]), trainer_state=SimpleNamespace(global_step=7))

    assert sizes == [4]
    assert live.steps == [7] and set(policy.seen_revisions) == {"7"}


def test_history_given_to_mr_leaves_out_the_system_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    function, reward, _ = make_function(ScriptedPolicy())
    seen: list[list[Candidate]] = []
    monkeypatch.setattr(reward, "score", lambda cands, seed=0: seen.append(cands) or [MRResult(mr=0.0)] * len(cands))

    function(**batch(["Hi."], [True], [NEEDS.id]), trainer_state=SimpleNamespace(global_step=0))

    assert seen[0][0].history == [{"role": "user", "content": NEEDS.opening}]
    assert seen[0][0].task is NEEDS and seen[0][0].text == "Hi."


def test_failed_mr_is_returned_as_none_and_counted_not_zero() -> None:
    function, _, _ = make_function(ScriptedPolicy(fail=True))

    rewards = function(**batch(["What is in each box?", "Mia has"], [True, False], [NEEDS.id, NEEDS.id]),
                       trainer_state=SimpleNamespace(global_step=3))

    assert rewards == [None, -0.5]
    metrics = function.drain()
    assert metrics["mr/failed"] == 1 and metrics["mr/failed_rate"] == 0.5 and metrics["mr/failed_rollouts"] == 2
    assert metrics["mr/mean"] == -0.5  # only the scored completion; the failure is not averaged in as 0


def test_unknown_task_of_a_prompt_is_an_error() -> None:
    function, _, _ = make_function(ScriptedPolicy())
    with pytest.raises(KeyError, match="not-a-task"):
        function(**batch(["Hi."], [True], [NEEDS.id]) | {"task_id": ["not-a-task"]})


def test_async_reward_function_returns_what_the_sync_one_returns() -> None:
    sync, _, _ = make_function(ScriptedPolicy("How many apples are in each box?"))
    async_, _, _ = make_function(ScriptedPolicy("How many apples are in each box?"), cls=AsyncMRRewardFunction)
    args = batch(["Which one?", "Mia has"], [True, False], [NEEDS.id, CLEAR.id])
    state = SimpleNamespace(global_step=2)

    expected = sync(**args, trainer_state=state)
    got = asyncio.run(async_(**args, trainer_state=state))

    assert got == expected and got[1] == -0.5


def scored(mr: float | None, **components: float) -> MRResult:
    rollouts = [RolloutScore([], mr, {})] if mr is not None else [RolloutScore([], None, {}, "policy: x")]
    return MRResult(mr=mr, components=components, rollouts=rollouts, failed_rollouts=0 if mr is not None else 1)


def test_breakdown_averages_components_and_ask_rates_over_scored_completions() -> None:
    totals = BreakdownTotals()
    candidates = [Candidate(NEEDS, [], "Which?"), Candidate(NEEDS, [], "42."), Candidate(CLEAR, [], "Which?"),
                  Candidate(CLEAR, [], "x", truncated=True), Candidate(CLEAR, [], "49.")]
    results = [scored(1.0, task=1.0, tokens=-0.1, interactivity=1.0, asked=1.0),
               scored(0.0, task=0.0, tokens=-0.1, interactivity=0.0, asked=0.0),
               scored(0.5, task=1.0, tokens=-0.2, interactivity=0.5, asked=1.0),
               MRResult(mr=-1.0, components={"truncated": 1.0}),
               scored(None)]

    record_batch(totals, candidates, results, seconds=2.0)
    metrics = breakdown_metrics(totals)

    assert metrics["mr/mean"] == pytest.approx(0.125)  # (1 + 0 + 0.5 - 1) / 4
    assert metrics["mr/std"] == pytest.approx(0.7395, abs=1e-4)
    assert metrics["mr/task"] == pytest.approx(2 / 3) and metrics["mr/tokens"] == pytest.approx(-0.4 / 3)
    assert metrics["mr/interactivity"] == pytest.approx(0.5) and metrics["mr/asked"] == pytest.approx(2 / 3)
    assert metrics["mr/ask_rate"] == 0.5 and metrics["mr/over_ask_rate"] == 1.0
    assert metrics["mr/truncated_rate"] == 0.2 and metrics["mr/failed"] == 1 and metrics["mr/candidates"] == 5
    assert metrics["mr/seconds"] == 2.0


def test_drain_merges_every_process_and_starts_over() -> None:
    function, _, _ = make_function(ScriptedPolicy())
    function(**batch(["Mia has"], [False], [NEEDS.id]), trainer_state=SimpleNamespace(global_step=0))
    other = BreakdownTotals()
    record_batch(other, [Candidate(CLEAR, [], "49.")], [scored(1.0, task=1.0, tokens=0.0, interactivity=0.0,
                                                                  asked=0.0)], seconds=1.0)

    metrics = function.drain(lambda mine: [mine, other])

    assert metrics["mr/candidates"] == 2 and metrics["mr/mean"] == pytest.approx(0.25)  # (-0.5 + 1) / 2
    assert function.drain() == {}


def test_sample_conversations_are_logged_every_n_steps(tmp_path: Path) -> None:
    function, _, _ = make_function(ScriptedPolicy("How many apples are in each box?"), tmp_path, every=2)
    for step in (0, 1, 2, 3, 5):
        function(**batch(["How many are in each box?", "Mia has"], [True, False], [NEEDS.id, CLEAR.id]),
                 trainer_state=SimpleNamespace(global_step=step))

    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 2, 5]  # 4 was never a generation step: the next call logs
    first = rows[0]
    assert first["task_id"] == NEEDS.id and first["prompt"] == [{"role": "user", "content": NEEDS.opening}]
    assert first["completion"] == "How many are in each box?" and len(first["rollouts"]) == 2
    assert first["rollouts"][0][1]["role"] == "user"  # the simulated user's reply in the rollout
    assert rows[1]["truncated"] is True and rows[1]["mr"] == -0.5 and rows[1]["rollouts"] == []


def test_sample_log_of_a_resumed_launch_waits_for_the_next_multiple(tmp_path: Path) -> None:
    log = SampleLog(tmp_path / "s.jsonl", every=4)
    assert [log.due(5), log.due(7), log.due(8)] == [False, False, True]
