"""The user-simulator interface: from a task record and a transcript, the next user turn or the end.

Simulators are batched: `respond` takes every conversation that waits on the user in one call, so an LLM simulator
can make one batched backend call per engine step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from collab.chat import Conversation
from collab.tasks.record import Task


@dataclass
class UserTurn:
    """What the simulated user does next.

    Attributes:
        text: The user's message; None when the user ends the conversation without saying anything more.
        done: The user is satisfied or gives up: the conversation ends after `text` (if any).
        info: Diagnostics: which fact was revealed, parse failures, re-asks, the simulator's private thought.
    """

    text: str | None
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SimulatorStats:
    turns: int = 0
    parse_failures: int = 0
    role_confusions: int = 0
    reasks: int = 0
    gave_up: int = 0


class UserSimulator(ABC):
    """Decides user turns. `transcript` holds user and assistant messages only (no system prompt); an empty
    transcript asks for the opening message."""

    name: str = "base"

    def __init__(self) -> None:
        self.stats = SimulatorStats()

    @abstractmethod
    def respond(self, batch: list[tuple[Task, Conversation]], seeds: list[int] | None = None) -> list[UserTurn]:
        """One UserTurn per (task, transcript), in order. `seeds[i]` seeds item i, so that several rollouts of the
        same transcript can sample different user replies; None means seed 0 for every item."""
