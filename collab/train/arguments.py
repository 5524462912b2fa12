"""The TRL config of a trainer stage: the recipe's `trainer:` arguments plus what collab decides."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.run.layout import StagePaths
from collab.stages.kinds import KINDS, load

DEFAULT_SAVE_TOTAL_LIMIT = 2


def stage_index(recipe: Recipe, stage: TrainerStage) -> int:
    """The stage's position in `stages:` (error messages name keys as `stages.<index>.trainer...`)."""
    return next(i for i, s in enumerate(recipe.stages) if s.label == stage.label)


def trainer_arguments(
    recipe: Recipe, stage: TrainerStage, run_dir: Path, *, gpu: bool, tracking: bool
) -> dict[str, Any]:
    """Keyword arguments of the stage's TRL config: `stage.trainer` plus what collab decides.

    collab sets output_dir (`<run>/<stage>/checkpoints`), report_to and run_name; defaults save_strategy to
    `steps`, save_total_limit to 2 and seed to the recipe's seed; refuses save_only_model (such checkpoints cannot
    resume); and on a machine without a GPU sets use_cpu and turns off bf16/fp16 unless the recipe asked for them,
    which is an error there. Then the kind's `extra_arguments` (collab.stages.kinds) add and check their own (online
    kinds: `collab.train.online.online_arguments`).
    """
    index = stage_index(recipe, stage)
    args = dict(stage.trainer)
    if args.get("save_only_model"):
        raise CollabError(
            f"stage '{stage.label}' sets save_only_model, whose checkpoints cannot be resumed",
            where=f"stages.{index}.trainer.save_only_model",
            fix=f"remove it (collab saves the final model separately), e.g. --set stages.{index}.trainer."
            "save_only_model=false.",
        )
    if not gpu:
        for flag in ("bf16", "fp16"):
            if args.get(flag):
                raise CollabError(
                    f"stage '{stage.label}' asks for {flag} mixed precision, but this machine has no GPU",
                    where=f"stages.{index}.trainer.{flag}",
                    fix=f"run it on a GPU machine, or train in float32 here with --set stages.{index}.trainer."
                    f"{flag}=false.",
                )
        args.update(bf16=False, fp16=False, use_cpu=True)
    args.setdefault("save_strategy", "steps")
    args.setdefault("save_total_limit", DEFAULT_SAVE_TOTAL_LIMIT)
    args.setdefault("seed", recipe.seed)
    from collab.train.tracking import run_name

    args.update(
        output_dir=str(StagePaths(run_dir, stage.label).checkpoints),
        report_to=["wandb"] if tracking else "none",
        run_name=run_name(recipe, stage),
    )
    extra = KINDS[stage.kind].extra_arguments
    if extra is not None:
        args = load(extra)(stage, args, gpu=gpu)
    return args


def make_config(kind: str, args: dict[str, Any]) -> Any:
    """The TRL config object of `kind` (SFTConfig, DPOConfig, ...) for `args`; a rejection is a CollabError."""
    cls = load(KINDS[kind].trl_config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return cls(**args)
    except (TypeError, ValueError) as e:
        raise CollabError(f"{cls.__name__} rejects the stage's trainer arguments: {e}") from None
