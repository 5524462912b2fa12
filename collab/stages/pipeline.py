"""The pipeline: running a recipe's stages in order, in the driver process (`collab train`, `collab resume`).

`train(recipe)` writes `recipe.resolved.yaml` into the run directory (after checking that a run already there can
continue under this recipe, collab.run.record), then runs the stages in order, skipping those with DONE.
`resume(run_dir)` reads the resolved recipe back and continues with the first stage without DONE, from its newest
complete checkpoint.

`run_stage` runs one stage as its kind's entry in collab.stages.kinds says: trainer kinds are launched under
`accelerate launch` (collab.train.driver, whose ranks run collab.train.rank_main); the other kinds (data, eval)
call their `run(recipe, stage, run_dir)` function in this process. When a stage returns without raising, it is
complete, and DONE is written if it did not write it itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO

from collab.backends.cache import CACHE_FILE, merge_shards
from collab.config import EvalStage, Recipe, StageBase, TrainerStage
from collab.errors import CollabError
from collab.interrupt import stage_interrupted
from collab.run.checkpoints import last_complete_checkpoint
from collab.run.layout import StagePaths
from collab.run.record import load_run, open_run
from collab.stages.kinds import load, stage_kind
from collab.train.driver import run_trainer_stage, say

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
        say(out, f"{run_dir}: {'stage ' + repr(stage) if stage else 'every stage'} is already done; nothing to "
             "resume")
        return run_dir
    first = pending[0]
    checkpoint = last_complete_checkpoint(StagePaths(run_dir, first.label).checkpoints)
    where = f"from {checkpoint}" if checkpoint else "from its start (no complete checkpoint)"
    say(out, f"resuming {run_dir} at stage '{first.label}' {where}")
    run_stages(recipe, run_dir, only=stage, out=out)
    return run_dir


def run_stages(recipe: Recipe, run_dir: Path, *, only: str | None = None, out: IO[str] | None = None) -> None:
    """Run the stages in order (or only `only`), skipping those with DONE."""
    stages = [recipe.stage(only)] if only else list(recipe.stages)
    for stage in stages:
        paths = StagePaths(run_dir, stage.label)
        if paths.is_done():
            say(out, f"stage '{stage.label}' is done; skipping it")
            continue
        check_inputs_done(recipe, stage, run_dir)
        # `collab train` continues a stage from its newest complete checkpoint, as `collab resume` does: say which,
        # since job scripts rerun the same `collab train` command after a requeue.
        checkpoint = last_complete_checkpoint(paths.checkpoints)
        start = f"continues from {checkpoint}" if checkpoint else "starts"
        say(out, f"stage '{stage.label}' ({stage.kind}) {start}")  # type: ignore[attr-defined]
        started = time.monotonic()
        try:
            run_stage(recipe, stage, run_dir, out=out)
        except KeyboardInterrupt:
            raise stage_interrupted(run_dir, stage.label, stage.kind) from None  # type: ignore[attr-defined]
        say(out, f"stage '{stage.label}' done in {time.monotonic() - started:.0f} s")
        _merge_cache(run_dir, out)


def _merge_cache(run_dir: Path, out: IO[str] | None) -> None:
    """Fold the per-writer request cache files (network filesystems) into the run's shared one after a stage.

    Only one process may, once the stage's writers are gone: the first node's (every node of a multi-node job runs
    this function). Array tasks of a data stage leave it to `collab data merge`, which runs after all of them."""
    if os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SLURM_NODEID", "0") != "0":
        return
    added = merge_shards(run_dir / CACHE_FILE)
    if added:
        say(out, f"request cache: {added} entries of this stage's processes merged into {run_dir / CACHE_FILE}")


def check_inputs_done(recipe: Recipe, stage: StageBase, run_dir: Path) -> None:
    """Refuse to start a stage before the stages it reads have DONE in `run_dir`.

    A stage's inputs are a trainer's `data_from` and `init_from`, and an eval stage's models that are training
    stages (all earlier ones when `models` is empty). `collab train RECIPE --stage NAME`, and every Slurm job (which
    runs that command), uses the outputs of finished inputs and never runs a missing one itself: it would train
    with other resources and time than the job was given.
    """
    if isinstance(stage, TrainerStage):
        inputs = [ref for ref in (stage.data_from, stage.init_from) if ref]
    elif isinstance(stage, EvalStage):
        from collab.evaluate.runner import stage_model_refs  # the one reading of an eval stage's `models`

        labels = {s.label for s in recipe.stages}
        inputs = [ref.label for ref in stage_model_refs(recipe, stage, run_dir) if ref.label in labels]
    else:
        inputs = []
    for ref in inputs:
        if not StagePaths(run_dir, ref).is_done():
            raise CollabError(f"stage '{stage.label}' needs stage '{ref}', which has not finished in {run_dir}",
                              fix=f"run it first: `collab train RECIPE --stage {ref}` with the same recipe and "
                              "--set overrides (or without --stage, which runs every unfinished stage in order).")


# --- one stage ---------------------------------------------------------------------------------------------------


def run_stage(recipe: Recipe, stage: StageBase, run_dir: Path, *, out: IO[str] | None = None) -> None:
    """Run one stage to completion (DONE written), whatever its kind."""
    kind = stage_kind(stage.kind)  # type: ignore[attr-defined]
    if kind.launched:
        assert isinstance(stage, TrainerStage)
        run_trainer_stage(recipe, stage, run_dir, out=out)  # its ranks write DONE
    else:
        assert kind.run is not None
        function = load(kind.run)
        run_dir.mkdir(parents=True, exist_ok=True)
        function(recipe, stage, run_dir)
    paths = StagePaths(run_dir, stage.label)
    if not paths.is_done():
        paths.mark_done(kind=kind.name)
