"""The per-rank entry of a trainer stage: the script `accelerate launch` runs once per process (rank).

    accelerate launch --config_file accelerate_configs/cpu.yaml -m collab.train.rank_main --run-dir RUN --stage NAME

The driver (`collab train`, collab.train.driver) builds that command; nobody else needs to. Every rank reads the
stage from RUN/recipe.resolved.yaml (so every process, on every node, sees the same recipe), then, top to bottom:
install the SIGUSR1/SIGTERM handlers, check the launch against launch.json, build the trainer the stage kind's
table entry names (arguments, starting model, data; for online kinds the MR reward), open the W&B run, train (from
the newest complete checkpoint when there is one), then either stop for a preemption (checkpoint saved,
preempted.json written) or save `final/` and write DONE.

Exit codes: 0 the stage finished (final/ and DONE written), 2 a problem the user can fix (message on stderr), 75
(`EXIT_PREEMPTED`) stopped by a signal after saving a checkpoint: requeue and continue with `collab resume RUN`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collab.errors import CollabError
from collab.interrupt import EXIT_INTERRUPTED
from collab.train.preemption import EXIT_PREEMPTED, PreemptionFlag

if TYPE_CHECKING:  # at run time imported after the signal handlers are installed (see `main`)
    from collab.config import Recipe, TrainerStage


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, train the stage in this rank, and return the exit code (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m collab.train.rank_main", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--stage", required=True, help="the stage's name in the resolved recipe")
    args = parser.parse_args(argv)

    flag = PreemptionFlag()
    flag.install()  # before the slow imports: a signal that arrives while loading still stops at the first step
    try:
        recipe, stage = load_stage(args.run_dir, args.stage)
        outcome = train_stage(recipe, stage, args.run_dir, flag)
    except CollabError as e:
        print(f"collab: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        # collab (the driver) reports what was saved; a traceback here would only repeat it in train.log.
        print(f"collab: stage '{args.stage}' interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(f"collab: stage '{args.stage}': {outcome.summary()}", flush=True)
    return EXIT_PREEMPTED if outcome.preempted else 0


def load_stage(run_dir: Path, label: str) -> tuple[Recipe, TrainerStage]:
    """The run's resolved recipe and its trainer stage `label`."""
    from collab.config import TrainerStage, load_recipe
    from collab.run.layout import RESOLVED_RECIPE

    resolved = run_dir / RESOLVED_RECIPE
    if not resolved.is_file():
        raise CollabError(f"{run_dir} is not a run directory (no {RESOLVED_RECIPE})",
                          fix="start stages with `collab train RECIPE`, which writes it.")
    recipe = load_recipe(resolved)
    stage = recipe.stage(label)
    if not isinstance(stage, TrainerStage):
        raise CollabError(f"stage '{label}' is a {stage.kind} stage, not a trainer stage")  # type: ignore[attr-defined]
    return recipe, stage


@dataclass
class StageOutcome:
    """How the stage ended in this process."""

    global_step: int
    max_steps: int
    preempted: bool
    checkpoint: Path | None
    final: Path | None

    def summary(self) -> str:
        """One JSON line for the log (the driver shows it)."""
        return json.dumps({"global_step": self.global_step, "max_steps": self.max_steps, "preempted": self.preempted,
                           "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                           "final": str(self.final) if self.final else None})


def train_stage(recipe: Recipe, stage: TrainerStage, run_dir: Path, flag: PreemptionFlag) -> StageOutcome:
    """Train `stage` in this rank; see the module docstring."""
    from accelerate import PartialState

    from collab.io import atomic_write_json
    from collab.run.checkpoints import last_complete_checkpoint, prune_finished, remove_partial_checkpoints
    from collab.run.compat import check_world_size
    from collab.run.layout import StagePaths
    from collab.train.callbacks import MetricsLogCallback, PreemptionCallback
    from collab.train.final_model import save_final
    from collab.train.tied_weights import explain_tied_weights
    from collab.train.tracking import finish_run, start_run, tracking_enabled

    # 1. Is there anything to do, and may this launch continue the stage's checkpoint?
    state = PartialState()
    paths = StagePaths(run_dir, stage.label)
    checkpoint = last_complete_checkpoint(paths.checkpoints)
    if paths.is_done():
        print(f"collab: stage '{stage.label}' is done already ({paths.done}); nothing to train", flush=True)
        step = json.loads(paths.done.read_text(encoding="utf-8")).get("global_step", 0)
        return StageOutcome(step, step, False, checkpoint, paths.final)
    check_world_size(paths, state.num_processes, checkpoint)
    if state.is_main_process:
        recorded = paths.read_launch() or {}
        if recorded.get("world_size") != state.num_processes:
            atomic_write_json(paths.launch, {**recorded, "world_size": state.num_processes})
        paths.preempted.unlink(missing_ok=True)
        for removed in remove_partial_checkpoints(paths.checkpoints, checkpoint):
            print(f"collab: removed the incomplete checkpoint {removed}", flush=True)
    state.wait_for_everyone()

    # 2. The trainer: arguments, starting model, data and (online kinds) the MR reward.
    tracking = tracking_enabled(recipe)
    callback = PreemptionCallback(flag)
    trainer, data, source = build_stage_trainer(recipe, stage, run_dir, callbacks=[callback, MetricsLogCallback(
        paths.metrics)], tracking=tracking)
    explain_tied_weights(trainer.model)

    # 3. Train, with the stage's W&B run open on the main process.
    run = None
    if tracking and state.is_main_process:
        run = start_run(recipe, stage, run_dir, samples=_sample_rows(stage, data), first_launch=checkpoint is None)
    if checkpoint is not None:
        print(f"collab: resuming stage '{stage.label}' from {checkpoint}", flush=True)
    preempted = False
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        step, max_steps = trainer.state.global_step, trainer.state.max_steps
        preempted = callback.stopped_at is not None and step < max_steps

        # 4a. Stopped by a signal: the checkpoint is saved; say where, for the driver and the next launch.
        if preempted:
            saved = last_complete_checkpoint(paths.checkpoints)
            if state.is_main_process:
                atomic_write_json(paths.preempted, {
                    "signal": flag.signal_name, "global_step": step, "max_steps": max_steps,
                    "checkpoint": str(saved) if saved else None, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                })
            return StageOutcome(step, max_steps, True, saved, None)

        # 4b. Finished: save final/, then DONE (last), then prune the checkpoints the stage no longer needs.
        final = save_final(trainer, paths, is_main=state.is_main_process)
        if state.is_main_process:
            paths.mark_done(global_step=step, final=str(final), source=source)
            removed = prune_finished(paths.checkpoints, final, stage.keep_checkpoints)
            if removed:
                print(f"collab: stage '{stage.label}' finished: removed {len(removed)} checkpoints "
                      f"(keep_checkpoints: {stage.keep_checkpoints})", flush=True)
        state.wait_for_everyone()
        return StageOutcome(step, max_steps, False, last_complete_checkpoint(paths.checkpoints), final)
    finally:
        finish_run(run, preempted=preempted)


def build_stage_trainer(recipe: Recipe, stage: TrainerStage, run_dir: Path, *, callbacks: list[Any] | None = None,
                        tracking: bool = False) -> tuple[Any, Any, str]:
    """The stage's trainer as every rank builds it, with its data and the starting model's source: the TRL
    arguments and config, the starting model, the kind's data and builder (collab.stages.kinds).

    Tests and benchmarks call it in their own process, after `collab.run.record.open_run`."""
    from collab.stages.kinds import KINDS, load
    from collab.train.arguments import make_config, trainer_arguments
    from collab.train.devices import has_gpu
    from collab.train.inputs import TrainerInputs
    from collab.train.start_model import build_model

    kind = KINDS[stage.kind]
    data = load(kind.load_data)(recipe, stage, run_dir)
    args = trainer_arguments(recipe, stage, run_dir, gpu=has_gpu(), tracking=tracking)
    config = make_config(stage.kind, args)
    setup = build_model(recipe, stage, run_dir, needs_reference=kind.reference_model)
    inputs = TrainerInputs(recipe=recipe, stage=stage, run_dir=run_dir, setup=setup, config=config, args=args,
                           data=data, callbacks=list(callbacks or []))
    trainer = load(kind.build_trainer)(load(kind.trainer), inputs)
    return trainer, data, setup.source


def _sample_rows(stage: TrainerStage, data: Any) -> list[dict[str, Any]]:
    """The first rows of the training data for the tracker's `data/samples` table (online kinds: the prompts,
    shown as conversations)."""
    from collab.stages.kinds import KINDS

    rows = [data["train"][i] for i in range(min(16, len(data["train"])))]
    if KINDS[stage.kind].online is not None:
        from collab.train.online_data import sample_rows

        rows = sample_rows(rows)
    return rows


if __name__ == "__main__":
    sys.exit(main())
