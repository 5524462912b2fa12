"""Drawing a generated task set whose requests are all different (the generated families share this loop)."""

from __future__ import annotations

from collections.abc import Callable

from collab.errors import CollabError
from collab.tasks.record import Task


def distinct_tasks(count: int, draw: Callable[[int, set[str]], Task | None], *, split: str, what: str) -> list[Task]:
    """`count` tasks with pairwise different goals, task i from `draw(i, goals so far)`.

    `draw` returns None when it found no unused goal for task i; then the set cannot be made that large, and the error
    says so in terms of `tasks.limit` (`what` names the tasks: "problems", "requests").
    """
    tasks: list[Task] = []
    seen: set[str] = set()
    for i in range(count):
        task = draw(i, seen)
        if task is None:
            raise CollabError(f"could not generate {count} distinct {split} {what} (stopped at {i})",
                              where="tasks.limit", fix="ask for fewer tasks.")
        seen.add(task.goal)
        tasks.append(task)
    return tasks
