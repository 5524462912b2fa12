"""The multiturn-aware reward (MR) of candidate responses.

    MR(m_j) = mean over S rollouts f_k of R*(t_{1:j} + f_k | g)
    R*      = w_task * R_task + w_tokens * R_tokens + w_int * R_int

For a batch of (task, history, candidate) items, every candidate gets S rollouts of `window` future assistant turns
against the simulated user, all advanced together by the batched engine. Each rollout's conversation is scored by
`ConversationScorer`: the task metric on its final artifact, the token penalty and the interactivity score. The
evaluation's conversation-level `mr` is the same scorer over a whole conversation, so the two cannot drift apart.
A component that cannot be computed makes that rollout fail (counted, with its reason); MR averages the rollouts
that succeeded and is None, with an error, when none did. A candidate cut off at the token limit gets
`truncation_penalty` without rollouts (unless that is None: then it is rolled out like any other).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from collab.backends.base import Backend
from collab.chat import Conversation, Message, SamplingParams
from collab.config import RewardConfig
from collab.errors import CollabError
from collab.metrics.base import MetricResult
from collab.metrics.tokens import CountTokens
from collab.rollout import ConversationState, RolloutEngine
from collab.simulators.base import UserSimulator
from collab.tasks.record import Task

COMPONENTS = ("task", "tokens", "interactivity")


@dataclass
class Candidate:
    """A candidate assistant response to the last user turn of `history`."""

    task: Task
    history: Conversation
    text: str
    truncated: bool = False
    strategy: str = "sample"


@dataclass
class RolloutScore:
    """One rollout of one candidate: its transcript after the history and its scored components."""

    messages: Conversation
    reward: float | None
    components: dict[str, float]
    error: str | None = None
    user_info: list[dict[str, Any]] = field(default_factory=list)
    behaviour: dict[str, float] = field(default_factory=dict)


@dataclass
class MRResult:
    """MR of one candidate, its spread, the mean of each component, and every rollout for inspection and data."""

    mr: float | None
    std: float = 0.0
    components: dict[str, float] = field(default_factory=dict)
    rollouts: list[RolloutScore] = field(default_factory=list)
    error: str | None = None
    failed_rollouts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RewardStats:
    candidates: int = 0
    rollouts: int = 0
    failed_rollouts: int = 0
    failed_candidates: int = 0
    truncated_candidates: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        key = reason.split(":")[0][:60]
        self.failure_reasons[key] = self.failure_reasons.get(key, 0) + 1


@dataclass(frozen=True)
class ConversationScore:
    """R* of one finished conversation: the weighted sum and its components, or why it could not be computed."""

    reward: float | None
    components: dict[str, float]
    error: str | None = None


def task_result(task: Task, messages: Conversation) -> MetricResult:
    """R_task of a conversation: the task metric on its final artifact.

    No answer attempt delivers nothing: a real 0, not a failure (asking forever must not pay). A conversation the
    assistant never spoke in, or a metric that raises, is a failure with its reason, never a 0.
    """
    from collab.metrics.task_score import score_response

    if not any(m["role"] == "assistant" for m in messages):
        return MetricResult.fail("the assistant never replied")
    final = final_artifact(task, messages)
    if final is None:
        return MetricResult(0.0, details={"no_answer_attempt": True})
    try:
        return score_response(task, final)
    except Exception as exc:  # noqa: BLE001 -- a crashing metric is a counted failure, not a crashed run
        return MetricResult.fail(f"{type(exc).__name__}: {exc}"[:300])


class ConversationScorer:
    """R* = w_task * R_task + w_tokens * R_tokens + w_int * R_int of finished conversations.

    The one scoring of a conversation that MR rollouts (training and data) and evaluation share. A conversation is
    rated from its message at `start` on: in MR, the candidate's own turn; in evaluation, 0 (the whole
    conversation, opening request included, is the window).

    Args:
        config: Token cost and mode, weights and the interactivity measure.
        judge: An InteractivityJudge, required when `config.interactivity == "judge"`.
    """

    def __init__(self, config: RewardConfig, judge: Any | None = None) -> None:
        if config.interactivity == "judge" and judge is None:
            raise CollabError("reward.interactivity is 'judge' but no judge was given", where="reward.interactivity",
                              fix="configure judge.backend, or choose interactivity 'elicitation' or 'none'.")
        self.config = config
        self.judge = judge

    def interactivity(self, items: list[tuple[Task, Conversation, list[dict[str, Any]], int]]) -> list[MetricResult]:
        """R_int of each (task, messages, the simulator's reveal record, start), batched for the judge."""
        mode = self.config.interactivity
        if mode == "none":
            return [MetricResult(0.0, details={"disabled": True}) for _ in items]
        if mode == "judge":
            return list(self.judge.score([(t, m) for t, m, _, _ in items]))  # type: ignore[union-attr]
        from collab.metrics.interactivity import elicitation_rate

        return [elicitation_rate(t, m, info, start=start) for t, m, info, start in items]

    def token_term(self, messages: Conversation, count_tokens: CountTokens, start: int = 0) -> float:
        """R_tokens: `window` mode counts every user and assistant token from `start` on, capped at 1 (the
        paper); `assistant` counts the assistant tokens of the whole conversation, uncapped (CollabLLM's code)."""
        from collab.metrics.tokens import assistant_tokens, token_penalty, window_tokens

        lam = self.config.token_lambda
        if self.config.token_mode == "window":
            return token_penalty(window_tokens(messages, count_tokens, start), lam)
        return token_penalty(assistant_tokens(messages, count_tokens), lam, cap=False)

    def combine(self, components: dict[str, float]) -> float:
        """The weighted sum of the three components."""
        w = self.config.weights
        return w.task * components["task"] + w.tokens * components["tokens"] + w.interactivity * components[
            "interactivity"]

    def score(
        self,
        messages: Conversation,
        *,
        task: MetricResult,
        interactivity: MetricResult,
        count_tokens: CountTokens,
        start: int = 0,
    ) -> ConversationScore:
        """R* of a finished conversation from its task result (`task_result`) and interactivity (`interactivity`);
        a component that failed makes the whole score fail with its reason."""
        if not task.ok:
            return ConversationScore(None, {}, f"task metric: {task.error}")
        if not interactivity.ok:
            return ConversationScore(None, {}, f"interactivity: {interactivity.error}")
        components = {
            "task": float(task.value),  # type: ignore[arg-type]
            "tokens": self.token_term(messages, count_tokens, start),
            "interactivity": float(interactivity.value),  # type: ignore[arg-type]
        }
        return ConversationScore(self.combine(components), components)


class MultiturnReward:
    """Scores candidates by what they cause over the next turns.

    Args:
        policy: Produces the future assistant turns: the model being trained, or a fixed one.
        simulator: Produces the future user turns.
        config: Window, samples, token cost, weights and sampling of future turns.
        judge: An InteractivityJudge, used when `config.interactivity == "judge"`.
        system_prompt: The policy's system prompt in rollouts.
    """

    def __init__(
        self,
        policy: Backend,
        simulator: UserSimulator,
        config: RewardConfig,
        *,
        judge: Any | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.engine = RolloutEngine(
            policy,
            simulator,
            params=SamplingParams(
                max_new_tokens=config.policy_max_new_tokens, temperature=config.policy_temperature
            ),
            system_prompt=system_prompt,
        )
        self.scorer = ConversationScorer(config, judge)
        self.stats = RewardStats()

    def score(self, candidates: list[Candidate], seed: int = 0, *, seeds: list[int] | None = None) -> list[MRResult]:
        """MR for every candidate, with all rollouts of all candidates advanced together.

        Rollout k of candidate i is seeded `seeds[i] + k` when `seeds` is given (so a candidate's MR does not depend
        on which other candidates share the batch), else `seed * 1_000_003 + i * 101 + k`."""
        cfg = self.config
        if seeds is not None and len(seeds) != len(candidates):
            raise ValueError(f"{len(seeds)} seeds for {len(candidates)} candidates")
        results: list[MRResult | None] = [None] * len(candidates)
        states: list[tuple[int, ConversationState]] = []
        for i, cand in enumerate(candidates):
            self.stats.candidates += 1
            if cand.truncated and cfg.truncation_penalty is not None:
                self.stats.truncated_candidates += 1
                results[i] = MRResult(mr=cfg.truncation_penalty, components={"truncated": 1.0})
                continue
            for k in range(cfg.samples):
                state = ConversationState(
                    task=cand.task,
                    messages=[*cand.history, Message(role="assistant", content=cand.text)],
                    seed=(seeds[i] if seeds is not None else seed * 1_000_003 + i * 101) + k,
                    max_assistant_turns=cfg.window,
                    done=cfg.window == 0,
                )
                states.append((i, state))
        self.engine.run([s for _, s in states])
        scored = self._score_rollouts(candidates, states)
        by_candidate: dict[int, list[RolloutScore]] = {}
        for (i, _), rollout in zip(states, scored):
            by_candidate.setdefault(i, []).append(rollout)
        for i, rollouts in by_candidate.items():
            results[i] = self._aggregate(rollouts)
        return [r if r is not None else MRResult(mr=None, error="not scored") for r in results]

    def _score_rollouts(
        self, candidates: list[Candidate], states: list[tuple[int, ConversationState]]
    ) -> list[RolloutScore]:
        interactivity = self.scorer.interactivity(
            [(s.task, s.messages, s.user_info, len(candidates[i].history)) for i, s in states]
        )
        out = []
        for (i, state), inter in zip(states, interactivity):
            self.stats.rollouts += 1
            start = len(candidates[i].history)
            window = state.messages[start:]
            if state.failed is not None:
                scored = ConversationScore(None, {}, state.failed)
            else:
                scored = self.scorer.score(
                    state.messages, task=task_result(state.task, state.messages), interactivity=inter,
                    count_tokens=self.policy.count_tokens, start=start,
                )
            if scored.error is not None:
                self.stats.failed_rollouts += 1
                self.stats.fail(scored.error)
                out.append(RolloutScore(window, None, {}, scored.error, state.user_info))
                continue
            out.append(RolloutScore(window, scored.reward, scored.components, None, state.user_info,
                                    _behaviour(state, start)))
        return out

    def _aggregate(self, rollouts: list[RolloutScore]) -> MRResult:
        good = [r for r in rollouts if r.reward is not None]
        failed = len(rollouts) - len(good)
        if not good:
            self.stats.failed_candidates += 1
            return MRResult(mr=None, rollouts=rollouts, error=rollouts[0].error, failed_rollouts=failed)
        rewards = [r.reward for r in good if r.reward is not None]
        components = {c: statistics.fmean(r.components[c] for r in good) for c in COMPONENTS}
        for key in good[0].behaviour:
            components[key] = statistics.fmean(r.behaviour.get(key, 0.0) for r in good)
        return MRResult(
            mr=statistics.fmean(rewards),
            std=statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
            components=components,
            rollouts=rollouts,
            failed_rollouts=failed,
        )


def final_artifact(task: Task, messages: Conversation) -> str | None:
    """The assistant's last answer attempt in the conversation; None when it made none.

    Only answer attempts are artifacts: a turn that asks ("Is it 36?") is never scored as an answer, so a policy
    cannot collect task credit by phrasing guesses as questions.
    """
    from collab.metrics.dialogue_acts import is_answer_attempt

    for msg in reversed(messages):
        if msg["role"] == "assistant" and is_answer_attempt(task, msg["content"]):
            return msg["content"]
    return None


def _behaviour(state: ConversationState, start: int) -> dict[str, float]:
    """Whether the candidate (the first assistant turn of the window) asked. For logs and data selection only:
    it is no part of the reward, and no label of the task is read."""
    from collab.metrics.dialogue_acts import asks_user

    asked = float(asks_user(state.task, state.messages[start]["content"])) if len(state.messages) > start else 0.0
    return {"asked": asked}
