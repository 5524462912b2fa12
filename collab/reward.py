"""The multiturn-aware reward (MR) of candidate responses.

    MR(m_j) = mean over S rollouts f_k of R*(t_{1:j} + f_k | g)
    R*      = w_task * R_task + w_tokens * R_tokens + w_int * R_int

For a batch of (task, history, candidate) items, every candidate gets S rollouts of `window` future assistant turns
against the simulated user, all advanced together by the batched engine. Each rollout's conversation is scored by
the task metric on its final artifact, the token penalty and the interactivity score. A component that cannot be
computed makes that rollout fail (counted, with its reason); MR averages the rollouts that succeeded and is None,
with an error, when none did. A candidate cut off at the token limit gets `truncation_penalty` without rollouts
(unless that is None: then it is rolled out like any other).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from collab.backends.base import Backend
from collab.chat import Conversation, Message, SamplingParams
from collab.config import RewardConfig
from collab.metrics.base import MetricResult
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


InteractivityFn = Callable[[list[tuple[Task, Conversation, list[dict[str, Any]]]]], list[MetricResult]]


class MultiturnReward:
    """Scores candidates by what they cause over the next turns.

    Args:
        policy: Produces the future assistant turns: the model being trained, or a fixed one.
        simulator: Produces the future user turns.
        config: Window, samples, token cost, weights and sampling of future turns.
        interactivity: Batched scorer of finished rollouts; defaults to the config's choice (`elicitation` rule
            proxy or `none`; `judge` needs `judge=`).
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
        self.judge = judge
        if config.interactivity == "judge" and judge is None:
            raise ValueError("reward.interactivity='judge' needs a judge")
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
        from collab.metrics.task_score import score_response

        cfg = self.config
        interactivity = self._interactivity(
            [(s.task, s.messages, s.user_info, len(candidates[i].history)) for i, s in states]
        )
        out = []
        for (i, state), inter in zip(states, interactivity):
            self.stats.rollouts += 1
            start = len(candidates[i].history)
            window = state.messages[start:]
            error = state.failed
            components: dict[str, float] = {}
            if error is None:
                final = final_artifact(state.task, state.messages)
                # No answer attempt delivers nothing: a real 0, not a failure (asking forever must not pay).
                task_result = score_response(state.task, final) if final is not None else MetricResult(
                    0.0, details={"no_answer_attempt": True})
                if not task_result.ok:
                    error = f"task metric: {task_result.error}"
                elif not inter.ok:
                    error = f"interactivity: {inter.error}"
                else:
                    components = {
                        "task": float(task_result.value),
                        "tokens": self._token_penalty(state.messages, window),
                        "interactivity": float(inter.value),
                    }
            if error is not None:
                self.stats.failed_rollouts += 1
                self.stats.fail(error)
                out.append(RolloutScore(window, None, {}, error, state.user_info))
                continue
            w = cfg.weights
            reward = w.task * components["task"] + w.tokens * components["tokens"] + w.interactivity * components[
                "interactivity"
            ]
            out.append(RolloutScore(window, reward, components, None, state.user_info, _behaviour(state, start)))
        return out

    def _interactivity(
        self, items: list[tuple[Task, Conversation, list[dict[str, Any]], int]]
    ) -> list[MetricResult]:
        """Interactivity of each rollout, rated from its candidate's turn (the last item) on."""
        mode = self.config.interactivity
        if mode == "none":
            return [MetricResult(0.0, details={"disabled": True}) for _ in items]
        if mode == "judge":
            return self.judge.score([(t, m) for t, m, _, _ in items])
        from collab.metrics.interactivity import elicitation_rate

        return [elicitation_rate(t, m, info, start=start) for t, m, info, start in items]

    def _token_penalty(self, messages: Conversation, window: Conversation) -> float:
        from collab.metrics.tokens import assistant_tokens, token_penalty, window_tokens

        count = self.policy.count_tokens
        if self.config.token_mode == "window":
            return token_penalty(window_tokens(window, count), self.config.token_lambda)
        return -self.config.token_lambda * assistant_tokens(messages, count)

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
