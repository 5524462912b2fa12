"""User-facing errors.

Anything a user can fix (a recipe key, a missing file, an unknown model name) raises `CollabError`. The CLI turns
it into a one-paragraph message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations


class CollabError(Exception):
    """An error caused by input the user controls; the message says what is wrong, where, and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None) -> None:
        parts = [f"{where}: {message}" if where else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class BackendUnavailable(CollabError):
    """A generation backend cannot run on this machine (for example vLLM without a GPU)."""
