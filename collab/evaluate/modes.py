"""Lost-in-Conversation evaluation modes, as transformations of a Task before simulation.

Why transform the task instead of the simulator: every simulator (scripted or LLM) reads the opening and the facts
from the task, so one rewrite makes every mode work with every simulator, and the metrics see the same task the
user played.

  sharded  the task as it is: the opening, then the facts revealed by the simulated user over the turns.
  full     the user's first message is the complete single-turn goal; nothing is held back.
  concat   the opening followed by every fact, in order, in one first message (same content as full, but in the
           sharded wording).

In full and concat nothing is missing any more, so `needs_clarification` becomes False: a question there counts
as over-asking. The task's own value is kept in `metadata["sharded_needs_clarification"]`.
"""

from __future__ import annotations

from typing import Literal

from collab.tasks.record import Task

Mode = Literal["sharded", "full", "concat"]
MODES: tuple[Mode, ...] = ("sharded", "full", "concat")


def _opening(task: Task) -> str:
    if task.opening:
        return task.opening
    from collab.simulators.sharded import first_sentence

    return first_sentence(task.goal)


def concat_message(task: Task) -> str:
    """The opening and every fact in one message, separated by spaces (each fact is a sentence)."""
    return " ".join(part.strip() for part in (_opening(task), *task.facts) if part.strip())


def apply_mode(task: Task, mode: Mode) -> Task:
    """The task a conversation in `mode` is simulated on (the same object for sharded)."""
    if mode == "sharded":
        return task
    if mode == "full":
        opening = task.goal
    elif mode == "concat":
        opening = concat_message(task)
    else:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    metadata = {**task.metadata, "mode": mode, "sharded_needs_clarification": task.needs_clarification}
    return task.model_copy(update={"opening": opening, "facts": (), "needs_clarification": False, "metadata": metadata})
