"""Ctrl-C: one line that says what was saved and how to continue, exit code 130, no tracebacks.

A stage interrupted by the user raises `Interrupted` with the truth about its state on disk: for a trainer stage the
last complete checkpoint (the step in progress is lost), for a data stage the scored turns in its store, for an
evaluation the finished conversations. The CLI prints it as one line followed by the resume command.
"""

from __future__ import annotations

from pathlib import Path

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C


class Interrupted(Exception):
    """The user interrupted a stage; the message says what was saved and how to continue."""


def count_lines(path: Path) -> int:
    """Non-empty lines of `path` (0 when it cannot be read): the records an append-only store holds."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def saved_state(run_dir: Path, label: str, kind: str) -> str:
    """What an interrupted stage of `kind` has kept in `run_dir / label`, in words (the stage-kind table says how)."""
    from collab.run.checkpoints import checkpoint_step, last_complete_checkpoint
    from collab.run.layout import StagePaths
    from collab.stages.kinds import load, stage_kind

    entry = stage_kind(kind)
    if entry.saved_state is not None:
        return str(load(entry.saved_state)(run_dir / label))
    checkpoint = last_complete_checkpoint(StagePaths(run_dir, label).checkpoints)
    if checkpoint is None:
        return "no checkpoint had been saved yet, so the stage starts over"
    return (f"the last complete checkpoint is {checkpoint} (step {checkpoint_step(checkpoint)}); "
            "the steps after it were lost")


def stage_interrupted(run_dir: Path, label: str, kind: str) -> Interrupted:
    return Interrupted(f"interrupted during stage '{label}': {saved_state(run_dir, label, kind)}. "
                       f"Continue with `collab resume {run_dir}`.")
