"""The conversation engine: advances many conversations a turn at a time.

Each step makes at most one batched simulator call (for every conversation waiting on the user) and one batched
policy call (for every conversation waiting on the assistant); finished conversations drop out. Nothing that loops
over candidates or samples issues its own model calls: callers build all their conversation states and hand them to
`run` at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collab.backends.base import Backend, Request
from collab.chat import Conversation, Message, SamplingParams, message
from collab.simulators.base import UserSimulator
from collab.tasks.record import Task


@dataclass
class ConversationState:
    """One conversation in flight.

    Attributes:
        task: What the simulated user wants.
        messages: The transcript so far, user and assistant turns only (the system prompt is added per call).
        seed: Seed of this conversation's policy samples; rollouts of the same candidate differ by seed.
        max_assistant_turns: Assistant turns this run may still add before the conversation stops.
        done: The user ended it, or it ran out of turns.
        failed: Why it could not continue (a failed model call or a simulator that gave up); None when fine.
        user_info: The simulator's info for each user turn it produced (revealed facts, reasons, errors).
        assistant_finish: finish_reason of each assistant turn this run produced.
    """

    task: Task
    messages: Conversation
    seed: int = 0
    max_assistant_turns: int = 1
    done: bool = False
    failed: str | None = None
    user_info: list[dict[str, Any]] = field(default_factory=list)
    assistant_finish: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return not self.done and self.failed is None

    @property
    def waiting_on_user(self) -> bool:
        return not self.messages or self.messages[-1]["role"] == "assistant"


@dataclass
class EngineStats:
    steps: int = 0
    simulator_calls: int = 0
    policy_calls: int = 0
    user_turns: int = 0
    assistant_turns: int = 0


class RolloutEngine:
    """Runs conversations between a policy backend and a user simulator, batched across conversations."""

    def __init__(
        self,
        policy: Backend,
        simulator: UserSimulator,
        *,
        params: SamplingParams,
        system_prompt: str | None = None,
    ) -> None:
        self.policy = policy
        self.simulator = simulator
        self.params = params
        self.system_prompt = system_prompt
        self.stats = EngineStats()

    def policy_prompt(self, messages: Conversation) -> Conversation:
        """What the policy sees: the system prompt (if any) and the transcript."""
        if self.system_prompt:
            return [message("system", self.system_prompt), *messages]
        return list(messages)

    def run(self, states: list[ConversationState]) -> list[ConversationState]:
        """Advance every state until it is done, failed or out of assistant turns. States are updated in place."""
        while True:
            active = [s for s in states if s.active]
            if not active:
                return states
            self.stats.steps += 1
            users = [s for s in active if s.waiting_on_user]
            if users:
                self._user_step(users)
            assistants = [s for s in active if s.active and not s.waiting_on_user]
            if assistants:
                self._assistant_step(assistants)

    def _user_step(self, states: list[ConversationState]) -> None:
        self.stats.simulator_calls += 1
        turns = self.simulator.respond(
            [(s.task, s.messages) for s in states], seeds=[s.seed + 7919 * len(s.messages) for s in states]
        )
        for state, turn in zip(states, turns):
            state.user_info.append({**turn.info, "done": turn.done})
            if turn.info.get("error") and turn.text is None:
                state.failed = f"simulator: {turn.info['error']}"
                continue
            if turn.text:
                state.messages.append(message("user", turn.text))
                self.stats.user_turns += 1
            if turn.done or not turn.text:
                state.done = True

    def _assistant_step(self, states: list[ConversationState]) -> None:
        self.stats.policy_calls += 1
        requests = [
            Request(self.policy_prompt(s.messages), self.params.with_(seed=s.seed, n=1), sample_index=len(s.messages))
            for s in states
        ]
        for state, gen in zip(states, self.policy.generate_requests(requests)):
            if not gen.ok:
                state.failed = f"policy: {gen.error}"
                continue
            state.messages.append(Message(role="assistant", content=gen.text))
            state.assistant_finish.append(gen.finish_reason)
            self.stats.assistant_turns += 1
            state.max_assistant_turns -= 1
            if state.max_assistant_turns <= 0:
                state.done = True
