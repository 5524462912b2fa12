"""One trainer stage (sft, dpo, online_dpo, grpo, rloo) inside the process that `accelerate launch` started.

Order of work: check the launch against launch.json, load data and the starting model, build the TRL trainer with
the preemption callback, open the W&B run, train (from the newest complete checkpoint when there is one), then
either stop for a preemption (checkpoint saved, preempted.json written) or save `final/` and write DONE.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.io import atomic_write_json
from collab.run.checkpoints import last_complete_checkpoint, prune_finished, remove_partial_checkpoints
from collab.run.compat import check_world_size
from collab.run.layout import StagePaths
from collab.train.callbacks import PreemptionCallback
from collab.train.common import build_model, has_gpu, make_config, save_final, trainer_arguments
from collab.train.preemption import PreemptionFlag
from collab.train.tied_weights import explain_tied_weights
from collab.train.tracking import finish_run, start_run, tracking_enabled

TRAINER_KINDS = ("sft", "dpo", "online_dpo", "grpo", "rloo")


@dataclass
class StageOutcome:
    """How the stage ended in this process."""

    global_step: int
    max_steps: int
    preempted: bool
    checkpoint: Path | None
    final: Path | None


def _data_and_builder(recipe: Recipe, run_dir: Path, stage: TrainerStage) -> tuple[Any, Any]:
    if stage.kind in ("online_dpo", "grpo", "rloo"):
        from collab.train.online import online_builder
        from collab.train.online_data import load_online_data

        return load_online_data(recipe, stage, run_dir), online_builder(recipe, stage, run_dir)
    if stage.kind == "sft":
        from collab.train.sft import build_sft_trainer, load_sft_data

        return load_sft_data(run_dir, stage), build_sft_trainer
    from collab.train.dpo import build_dpo_trainer, load_dpo_data

    return load_dpo_data(run_dir, stage), partial(build_dpo_trainer,
                                                  max_completion_length=stage.max_completion_length)


def train_stage(recipe: Recipe, stage: TrainerStage, run_dir: Path, flag: PreemptionFlag) -> StageOutcome:
    """Train `stage` in this process (one of the launched ones); see the module docstring."""
    from accelerate import PartialState

    if stage.kind not in TRAINER_KINDS:
        raise CollabError(f"collab.train.entry runs the trainer stages {TRAINER_KINDS}, not '{stage.kind}'")
    state = PartialState()
    paths = StagePaths(run_dir, stage.label)
    checkpoint = last_complete_checkpoint(paths.checkpoints)
    if paths.is_done():
        print(f"collab: stage '{stage.label}' is done already ({paths.done}); nothing to train", flush=True)
        step = json.loads(paths.done.read_text(encoding="utf-8")).get("global_step", 0)
        return StageOutcome(step, step, False, checkpoint, paths.final)
    check_world_size(paths, state.num_processes, checkpoint)
    recorded = paths.read_launch() or {}
    if state.is_main_process and recorded.get("world_size") != state.num_processes:
        atomic_write_json(paths.launch, {**recorded, "world_size": state.num_processes})
    if state.is_main_process:
        paths.preempted.unlink(missing_ok=True)
        for removed in remove_partial_checkpoints(paths.checkpoints, checkpoint):
            print(f"collab: removed the incomplete checkpoint {removed}", flush=True)
    state.wait_for_everyone()

    data, build_trainer = _data_and_builder(recipe, run_dir, stage)
    tracking = tracking_enabled(recipe)
    args = trainer_arguments(recipe, stage, run_dir, gpu=has_gpu(), tracking=tracking)
    config = make_config(stage.kind, args)
    setup = build_model(recipe, stage, run_dir, needs_reference=stage.kind == "dpo")
    callback = PreemptionCallback(flag)
    trainer = build_trainer(setup, config, data, args, [callback])
    explain_tied_weights(trainer.model)

    run = None
    if tracking and state.is_main_process:
        rows = [data["train"][i] for i in range(min(16, len(data["train"])))]
        if stage.kind not in ("sft", "dpo"):
            from collab.train.online_data import sample_rows

            rows = sample_rows(rows)  # online stages: the prompts, shown as conversations
        run = start_run(recipe, stage, run_dir, samples=rows, first_launch=checkpoint is None)
    if checkpoint is not None:
        print(f"collab: resuming stage '{stage.label}' from {checkpoint}", flush=True)
    preempted = False
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        step, max_steps = trainer.state.global_step, trainer.state.max_steps
        preempted = callback.stopped_at is not None and step < max_steps
        if preempted:
            saved = last_complete_checkpoint(paths.checkpoints)
            if state.is_main_process:
                atomic_write_json(paths.preempted, {
                    "signal": flag.signal_name, "global_step": step, "max_steps": max_steps,
                    "checkpoint": str(saved) if saved else None, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                })
            return StageOutcome(step, max_steps, True, saved, None)
        final = save_final(trainer, paths, is_main=state.is_main_process)
        if state.is_main_process:
            paths.mark_done(global_step=step, final=str(final), source=setup.source)
            removed = prune_finished(paths.checkpoints, final, stage.keep_checkpoints)
            if removed:
                print(f"collab: stage '{stage.label}' finished: removed {len(removed)} checkpoints "
                      f"(keep_checkpoints: {stage.keep_checkpoints})", flush=True)
        state.wait_for_everyone()
        return StageOutcome(step, max_steps, False, last_complete_checkpoint(paths.checkpoints), final)
    finally:
        finish_run(run, preempted=preempted)


def summary(outcome: StageOutcome) -> str:
    return json.dumps({"global_step": outcome.global_step, "max_steps": outcome.max_steps,
                       "preempted": outcome.preempted,
                       "checkpoint": str(outcome.checkpoint) if outcome.checkpoint else None,
                       "final": str(outcome.final) if outcome.final else None})
