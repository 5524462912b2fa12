"""Named task sets: recipes and the CLI name a set (`clarify-math`) or a JSONL file, and get a list of tasks.

A task set is a builder `(split, limit, seed) -> list[Task]` registered under a name with `@register_task_set`.
The built-in sets register themselves when this module is imported (see the imports at the bottom), so
`load_task_set` and `list_task_sets` always see them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from collab.errors import CollabError
from collab.tasks.jsonl import load_tasks_jsonl
from collab.tasks.record import Task

SPLITS: tuple[str, ...] = ("train", "test", "all")
"""Split names a builder may be asked for; "all" is supported where a set has a fixed universe (HumanEval)."""


class TaskSetBuilder(Protocol):
    def __call__(self, split: str, limit: int | None, seed: int) -> list[Task]: ...


_REGISTRY: dict[str, TaskSetBuilder] = {}


def register_task_set(name: str) -> Callable[[TaskSetBuilder], TaskSetBuilder]:
    """Decorator: make `builder` loadable as `name`. Names are unique; registering one twice is a bug."""

    def decorate(builder: TaskSetBuilder) -> TaskSetBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"task set {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_task_sets() -> list[str]:
    """Names of the registered task sets, sorted."""
    return sorted(_REGISTRY)


def load_task_set(spec: str, *, split: str = "train", limit: int | None = None, seed: int = 0) -> list[Task]:
    """The tasks of a registered set, or of a JSONL file when `spec` is a path.

    Args:
        spec: A registered name (`list_task_sets()`), or a path to a `.jsonl` file of task records.
        split: "train", "test", or "all" where the set supports it. Ignored for a file: the file is the whole set.
        limit: Keep only the first `limit` tasks; None for the set's default size.
        seed: Seed of generated sets; fixed sets ignore it so their test split never moves.

    Raises:
        CollabError: unknown name, missing file, bad split or limit, or a malformed file.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CollabError(f"limit must be a positive integer or empty, got {limit!r}", where="tasks.limit")
    builder = _REGISTRY.get(spec)
    if builder is None and _looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise CollabError(
                f"task file {str(path)!r} does not exist",
                where="tasks.name",
                fix=f"check the path, or use a registered task set: {', '.join(list_task_sets())}.",
            )
        tasks = load_tasks_jsonl(path)
        return tasks[:limit] if limit is not None else tasks
    if builder is None:
        close = difflib.get_close_matches(spec, list_task_sets(), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CollabError(
            f"unknown task set {spec!r}",
            where="tasks.name",
            fix=f"{hint}Registered task sets: {', '.join(list_task_sets())}; or give a path to a .jsonl file.",
        )
    if split not in SPLITS:
        close = difflib.get_close_matches(split, SPLITS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CollabError(f"unknown split {split!r}", where="tasks.split", fix=f"{hint}Use one of {', '.join(SPLITS)}.")
    return builder(split, limit, seed)


def _looks_like_path(spec: str) -> bool:
    """A spec that is not a registered name is a file when it ends in .jsonl, contains a directory separator (names
    never do) or names an existing file."""
    return spec.endswith(".jsonl") or "/" in spec or "\\" in spec or Path(spec).expanduser().is_file()


def unsupported_split(name: str, split: str, supported: tuple[str, ...]) -> CollabError:
    """The error a builder raises for a split it does not have."""
    return CollabError(
        f"task set {name!r} has no split {split!r}", where="tasks.split", fix=f"use one of {', '.join(supported)}."
    )


# Built-in task sets register themselves on import. Imported last: they import `register_task_set` from here.
from collab.tasks import clarify_math, clarify_message, collabllm_hub, humaneval_chat  # noqa: E402,F401
