"""Running a recipe's stages: `collab train` and `collab resume`.

`train(recipe)` writes `recipe.resolved.yaml` into the run directory (after checking that a run already there can
continue under this recipe), then runs the stages in order, skipping those with DONE. `resume(run_dir)` reads the
resolved recipe back and continues with the first stage without DONE, from its newest complete checkpoint.

Stage kinds are dispatched by `run_stage`: `sft` and `dpo` run in a subprocess started with `accelerate launch`
(`collab.train.entry`); the other kinds call functions with the same signature, imported when needed (the online
kinds' function launches `collab.train.entry` the same way, through `run_trainer_stage`):

    data:                     collab.data.engine.run_data_stage(recipe, stage, run_dir)
                              (or collab.data.stage.run_data_stage)
    eval:                     collab.evaluate.runner.run_eval_stage(recipe, stage, run_dir)
    online_dpo, grpo, rloo:   collab.train.online.run_online_stage(recipe, stage, run_dir)

They run in this process; when one returns without raising, the stage is complete and DONE is written if the
function did not write it itself.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from collab.backends.cache import CACHE_FILE, merge_shards
from collab.config import Recipe, StageBase, TrainerStage
from collab.errors import CollabError
from collab.interrupt import stage_interrupted
from collab.io import atomic_write_json
from collab.run.checkpoints import last_complete_checkpoint
from collab.run.compat import check_world_size
from collab.run.layout import StagePaths
from collab.run.record import load_run, open_run
from collab.train.batch import check_effective_batch
from collab.train.preemption import EXIT_PREEMPTED

OFFLINE_KINDS = ("sft", "dpo")
STAGE_FUNCTIONS: dict[str, list[tuple[str, str]]] = {
    "data": [("collab.data.stage", "run_data_stage")],
    "eval": [("collab.evaluate.runner", "run_eval_stage")],
    "online_dpo": [("collab.train.online", "run_online_stage")],
    "grpo": [("collab.train.online", "run_online_stage")],
    "rloo": [("collab.train.online", "run_online_stage")],
}


class StagePreempted(CollabError):
    """A stage stopped on a preemption signal after saving a checkpoint; `collab` exits with EXIT_PREEMPTED."""

    exit_code = EXIT_PREEMPTED


def _say(out: IO[str] | None, text: str) -> None:
    print(f"collab: {text}", file=out or sys.stdout, flush=True)


# --- entry points ------------------------------------------------------------------------------------------------


def train(recipe: Recipe, *, stage: str | None = None, run_dir: Path | None = None,
          out: IO[str] | None = None, restart_from: str | None = None) -> Path:
    """`collab train RECIPE [--stage NAME] [--restart-from NAME]`: run the recipe's stages (or one) into its run
    directory; `restart_from` runs that stage and the later ones again (see `collab.run.record.open_run`)."""
    run_dir = Path(run_dir or recipe.run_dir)
    if not recipe.stages:
        raise CollabError(f"recipe '{recipe.name}' has no stages, so there is nothing to train",
                          fix="add a `stages:` list (e.g. `- kind: data`, then `- kind: sft` with `data_from: data`).")
    if stage is not None:
        recipe.stage(stage)  # a clear error for an unknown name, before anything is written
    open_run(recipe, run_dir, restart_from=restart_from)
    run_stages(recipe, run_dir, only=stage, out=out)
    return run_dir


def resume(run_dir: str | Path, *, stage: str | None = None, out: IO[str] | None = None) -> Path:
    """`collab resume RUN_DIR [--stage NAME]`: continue a run with its resolved recipe, from the first unfinished
    stage's newest complete checkpoint (with the same W&B run id)."""
    run_dir = Path(run_dir)
    recipe = load_run(run_dir)
    pending = [s for s in recipe.stages if not StagePaths(run_dir, s.label).is_done()]
    if stage is not None:
        recipe.stage(stage)  # a clear error for an unknown name
        pending = [s for s in pending if s.label == stage]
    if not pending:
        _say(out, f"{run_dir}: {'stage ' + repr(stage) if stage else 'every stage'} is already done; nothing to "
             "resume")
        return run_dir
    first = pending[0]
    checkpoint = last_complete_checkpoint(StagePaths(run_dir, first.label).checkpoints)
    where = f"from {checkpoint}" if checkpoint else "from its start (no complete checkpoint)"
    _say(out, f"resuming {run_dir} at stage '{first.label}' {where}")
    run_stages(recipe, run_dir, only=stage, out=out)
    return run_dir


def run_stages(recipe: Recipe, run_dir: Path, *, only: str | None = None, out: IO[str] | None = None) -> None:
    """Run the stages in order (or only `only`), skipping those with DONE."""
    stages = [recipe.stage(only)] if only else list(recipe.stages)
    for stage in stages:
        paths = StagePaths(run_dir, stage.label)
        if paths.is_done():
            _say(out, f"stage '{stage.label}' is done; skipping it")
            continue
        _check_inputs_done(stage, run_dir)
        # `collab train` continues a stage from its newest complete checkpoint, as `collab resume` does: say which,
        # since job scripts rerun the same `collab train` command after a requeue.
        checkpoint = last_complete_checkpoint(paths.checkpoints)
        start = f"continues from {checkpoint}" if checkpoint else "starts"
        _say(out, f"stage '{stage.label}' ({stage.kind}) {start}")  # type: ignore[attr-defined]
        started = time.monotonic()
        try:
            run_stage(recipe, stage, run_dir, out=out)
        except KeyboardInterrupt:
            raise stage_interrupted(run_dir, stage.label, stage.kind) from None  # type: ignore[attr-defined]
        _say(out, f"stage '{stage.label}' done in {time.monotonic() - started:.0f} s")
        _merge_cache(run_dir, out)


def _merge_cache(run_dir: Path, out: IO[str] | None) -> None:
    """Fold the per-writer request cache files (network filesystems) into the run's shared one after a stage.

    Only one process may, once the stage's writers are gone: the first node's (every node of a multi-node job runs
    this function). Array tasks of a data stage leave it to `collab data merge`, which runs after all of them."""
    if os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SLURM_NODEID", "0") != "0":
        return
    added = merge_shards(run_dir / CACHE_FILE)
    if added:
        _say(out, f"request cache: {added} entries of this stage's processes merged into {run_dir / CACHE_FILE}")


def _check_inputs_done(stage: StageBase, run_dir: Path) -> None:
    if not isinstance(stage, TrainerStage):
        return
    for ref in (stage.data_from, stage.init_from):
        if ref and not StagePaths(run_dir, ref).is_done():
            raise CollabError(f"stage '{stage.label}' needs stage '{ref}', which has not finished",
                              fix=f"run it first: `collab train RECIPE --stage {ref}` (or without --stage, which "
                              "runs every stage in order).")


# --- dispatch ----------------------------------------------------------------------------------------------------


def stage_function(kind: str) -> Callable[[Recipe, Any, Path], Any]:
    """The function that runs a stage of `kind` other than sft/dpo, imported now."""
    errors = []
    for module_name, attr in STAGE_FUNCTIONS.get(kind, []):
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            errors.append(f"{module_name}: {e}")
            continue
        function = getattr(module, attr, None)
        if callable(function):
            return function
        errors.append(f"{module_name} has no {attr}")
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise CollabError(f"stage kind {kind} is not available in this version{detail}",
                      fix="remove the stage from the recipe, or install a collab version that has it.")


def run_stage(recipe: Recipe, stage: StageBase, run_dir: Path, *, out: IO[str] | None = None) -> None:
    """Run one stage to completion (DONE written), whatever its kind."""
    kind = stage.kind  # type: ignore[attr-defined]
    if kind in OFFLINE_KINDS:
        assert isinstance(stage, TrainerStage)
        run_trainer_stage(recipe, stage, run_dir, out=out)
        return
    function = stage_function(kind)
    run_dir.mkdir(parents=True, exist_ok=True)
    function(recipe, stage, run_dir)
    paths = StagePaths(run_dir, stage.label)
    if not paths.is_done():
        paths.mark_done(kind=kind)


# --- trainer stages ----------------------------------------------------------------------------------------------


def _preflight(recipe: Recipe, stage: TrainerStage, run_dir: Path, gpu: bool) -> None:
    """Fail in this process, before a launch that takes seconds to start, on what the trainer would refuse."""
    from collab.train.common import init_source, trainer_arguments

    if stage.kind in OFFLINE_KINDS and not stage.data_from:
        raise CollabError(f"stage '{stage.label}' ({stage.kind}) has no data_from: it needs the data stage whose "
                          f"{stage.kind}/ dataset it trains on", fix="set `data_from:` to an earlier data stage.")
    trainer_arguments(recipe, stage, run_dir, gpu=gpu, tracking=False)
    if stage.init_from:
        init_source(recipe, stage, run_dir)


def run_trainer_stage(recipe: Recipe, stage: TrainerStage, run_dir: Path, *, out: IO[str] | None = None) -> Path:
    """Launch `collab.train.entry` for a trainer stage and wait for it; returns the stage's final/ folder.

    Raises StagePreempted (exit code 75) when the trainer stopped on a signal after saving a checkpoint, and a
    CollabError with the last lines of its output when it failed.
    """
    from collab.train.launch import plan_launch, run_launch, visible_gpus
    from collab.train.tracking import wandb_env

    paths = StagePaths(run_dir, stage.label)
    gpus = visible_gpus()
    _preflight(recipe, stage, run_dir, gpu=gpus > 0)
    plan = plan_launch(stage, run_dir, gpus=gpus)
    for note in plan.notes:
        _say(out, note)
    check_world_size(paths, plan.world_size, last_complete_checkpoint(paths.checkpoints))
    _say(out, f"stage '{stage.label}': {check_effective_batch(stage, plan.world_size).describe()}")
    plan.env.update(wandb_env(recipe, stage, run_dir))
    previous = paths.read_launch() or {}
    atomic_write_json(paths.launch, {**plan.record(), "launches": int(previous.get("launches", 0)) + 1,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    paths.preempted.unlink(missing_ok=True)
    _say(out, f"launching: {' '.join(plan.command)}")
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
