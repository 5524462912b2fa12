"""Build a user simulator from a recipe's `simulator.kind` and options."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from collab.backends.base import Backend
from collab.errors import CollabError
from collab.simulators.base import UserSimulator
from collab.simulators.llm import LLMSimulator
from collab.simulators.sharded import ShardedSimulator

SIMULATOR_KINDS: dict[str, type[UserSimulator]] = {"sharded": ShardedSimulator, "llm": LLMSimulator}


def _options_of(cls: Callable[..., Any]) -> list[str]:
    params = inspect.signature(cls).parameters
    return [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def make_simulator(kind: str, *, backend: Backend | None = None, **options: Any) -> UserSimulator:
    """A simulator of `kind` ("sharded": scripted fact reveal, no model; "llm": prompted model, needs `backend`).

    Unknown kinds and unknown options raise CollabError naming what is valid, so a recipe typo fails before any
    model is loaded.
    """
    if kind not in SIMULATOR_KINDS:
        close = difflib.get_close_matches(kind, SIMULATOR_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CollabError(
            f"unknown simulator kind {kind!r}; valid kinds: {', '.join(SIMULATOR_KINDS)}.{hint}",
            where="simulator.kind",
        )
    cls = SIMULATOR_KINDS[kind]
    allowed = _options_of(cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise CollabError(
            f"unknown option(s) {', '.join(unknown)} for the {kind!r} simulator; "
            f"valid options: {', '.join(allowed) or 'none'}",
            where="simulator",
        )
    if kind == "llm":
        if backend is None:
            raise CollabError(
                "the 'llm' simulator needs a backend to play the user",
                where="simulator",
                fix="configure a simulator model (simulator.model), or use kind 'sharded', which needs none",
            )
        return LLMSimulator(backend, **options)
    # A backend given to the scripted user is ignored: recipes may pass one setting for every kind.
    return ShardedSimulator(**options)
