"""A trainer stage as the driver (the `collab` process) runs it: check what can be checked here, launch the ranks
under `accelerate launch` (collab.train.driver_launch), wait, and turn their outcome into DONE, a preemption or an
error.

The ranks run `collab.train.rank_main`; this process loads no model and no data for a trainer stage, so it stays
small while they train.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.io import atomic_write_json
from collab.run.checkpoints import last_complete_checkpoint
from collab.run.compat import check_world_size
from collab.run.layout import StagePaths
from collab.stages.kinds import KINDS
from collab.train.batch import check_effective_batch
from collab.train.preemption import EXIT_PREEMPTED


class StagePreempted(CollabError):
    """A stage stopped on a preemption signal after saving a checkpoint; `collab` exits with EXIT_PREEMPTED."""

    exit_code = EXIT_PREEMPTED


def say(out: IO[str] | None, text: str) -> None:
    """A `collab: ...` progress line on `out` (stdout by default)."""
    print(f"collab: {text}", file=out or sys.stdout, flush=True)


def _preflight(recipe: Recipe, stage: TrainerStage, run_dir: Path, gpu: bool) -> None:
    """Fail in this process, before a launch that takes seconds to start, on what the trainer would refuse."""
    from collab.train.arguments import trainer_arguments
    from collab.train.start_model import init_source

    if KINDS[stage.kind].needs_data_from and not stage.data_from:
        raise CollabError(f"stage '{stage.label}' ({stage.kind}) has no data_from: it needs the data stage whose "
                          f"{stage.kind}/ dataset it trains on", fix="set `data_from:` to an earlier data stage.")
    trainer_arguments(recipe, stage, run_dir, gpu=gpu, tracking=False)
    if stage.init_from:
        init_source(recipe, stage, run_dir)


def run_trainer_stage(recipe: Recipe, stage: TrainerStage, run_dir: Path, *, out: IO[str] | None = None) -> Path:
    """Launch `collab.train.rank_main` for a trainer stage and wait for it; returns the stage's final/ folder.

    Raises StagePreempted (exit code 75) when the trainer stopped on a signal after saving a checkpoint, and a
    CollabError with the last lines of its output when it failed.
    """
    from collab.train.devices import visible_gpus
    from collab.train.driver_launch import plan_launch, run_launch
    from collab.train.tracking import wandb_env

    paths = StagePaths(run_dir, stage.label)
    gpus = visible_gpus()
    _preflight(recipe, stage, run_dir, gpu=gpus > 0)
    plan = plan_launch(stage, run_dir, gpus=gpus)
    for note in plan.notes:
        say(out, note)
    check_world_size(paths, plan.world_size, last_complete_checkpoint(paths.checkpoints))
    say(out, f"stage '{stage.label}': {check_effective_batch(stage, plan.world_size).describe()}")
    plan.env.update(wandb_env(recipe, stage, run_dir))
    previous = paths.read_launch() or {}
    atomic_write_json(paths.launch, {**plan.record(), "launches": int(previous.get("launches", 0)) + 1,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    paths.preempted.unlink(missing_ok=True)
    say(out, f"launching: {' '.join(plan.command)}")
    result = run_launch(plan, paths, out=out)
    if "SIGINT" in result.signals and not paths.is_done():
        raise KeyboardInterrupt
    if paths.preempted.is_file():
        raise _preempted(paths, run_dir)
    if result.returncode != 0 or not paths.is_done():
        message, fix = _failure(paths, result.returncode, result.tail)
        raise CollabError(message, fix=fix or f"see the full output in {paths.log}; after fixing the cause, "
                          f"`collab resume {run_dir}` continues from the last complete checkpoint.")
    if result.signals:
        raise StagePreempted(f"stage '{stage.label}' finished, but {result.signals[0]} arrived while it ran, so no "
                             "further stage is started", fix=f"continue with `collab resume {run_dir}`.")
    return paths.final


def _preempted(paths: StagePaths, run_dir: Path) -> StagePreempted:
    import json

    try:
        info = json.loads(paths.preempted.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    checkpoint = Path(info["checkpoint"]).name if info.get("checkpoint") else "its last checkpoint"
    return StagePreempted(
        f"stage '{paths.label}' stopped on {info.get('signal', 'a signal')} at step {info.get('global_step', '?')} "
        f"of {info.get('max_steps', '?')} after saving {checkpoint} (exit code {EXIT_PREEMPTED})",
        fix=f"continue with `collab resume {run_dir}` (Slurm: requeue the job).",
    )


def _failure(paths: StagePaths, returncode: int, tail: str) -> tuple[str, str | None]:
    """The error message (and fix, when the trainer printed its own) of a failed launch."""
    errors = [line for line in tail.splitlines() if line.startswith("collab: error: ")]
    if errors:
        message, _, fix = errors[-1].removeprefix("collab: error: ").partition(" Fix: ")
        return f"stage '{paths.label}': {message}", fix or None
    if returncode == 0:
        return f"stage '{paths.label}': the trainer exited without writing {paths.done}", None
    lines = tail.splitlines()[-15:]
    return f"stage '{paths.label}' failed (exit code {returncode}). Last lines of its output:\n" + "\n".join(lines), None
