"""Can a run directory be continued with this recipe?

Restarting `collab train` on a run directory continues it, so the new recipe must agree with the resolved one in
everything a resume depends on: the model, the stages (names, kinds and lineage; appending stages is fine), and the
trainer arguments that fix the batch and the step count. Anything else (learning rate, logging, tracking, eval
settings) may change between starts. The number of processes is checked separately against each stage's
launch.json (`check_world_size`), by the driver before it launches and by the launched ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.run.layout import StagePaths

# Trainer arguments that change what "step N" means: a checkpoint taken under other values cannot be continued.
STEP_DEFINING_ARGS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "auto_find_batch_size",
)


_UNSET: Any = object()


def _diff(old: Any, new: Any, key: str) -> list[str]:
    """`key (old -> new)` for every leaf that differs; a section added or removed is shown whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for k in sorted(set(old) | set(new)) for line in _diff(old.get(k, _UNSET), new.get(k, _UNSET),
                                                                           f"{key}.{k}")]
    return [] if old == new else [f"{key} ({_show(old)} -> {_show(new)})"]


def _show(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)


def _stage_list(stages: list[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{label}:{kind}" for label, kind in stages) + "]"


def breaking_differences(old: Recipe, new: Recipe) -> list[str]:
    """The keys (with old -> new values) in which `new` cannot continue a run started with `old`; empty if none."""
    problems = _diff(old.model.model_dump(mode="json"), new.model.model_dump(mode="json"), "model")
    old_stages = [(s.label, s.kind) for s in old.stages]  # type: ignore[attr-defined]
    new_stages = [(s.label, s.kind) for s in new.stages]  # type: ignore[attr-defined]
    if new_stages[: len(old_stages)] != old_stages:
        problems.append(f"stages ({_stage_list(old_stages)} -> {_stage_list(new_stages)})")
        return problems
    for index, (before, after) in enumerate(zip(old.stages, new.stages)):
        if not isinstance(before, TrainerStage) or not isinstance(after, TrainerStage):
            continue
        where = f"stages.{index}"
        for key in ("init_from", "data_from"):
            if getattr(before, key) != getattr(after, key):
                problems.append(f"{where}.{key} ({getattr(before, key)!r} -> {getattr(after, key)!r})")
        problems += _diff({k: v for k, v in before.trainer.items() if k in STEP_DEFINING_ARGS},
                          {k: v for k, v in after.trainer.items() if k in STEP_DEFINING_ARGS}, f"{where}.trainer")
    return problems


# Keys that do not change what a finished stage produced: where the run is (it is being opened, whatever the
# recipe calls it), its display name and how it is tracked.
_RECORD_NEUTRAL = ("name", "output_dir", "tracking", "stages")


def finished_stage_differences(old: Recipe, new: Recipe, finished: list[str]) -> dict[str, list[str]]:
    """For each finished stage (by label) whose settings in `new` differ from those it ran under in `old`, the keys
    with old -> new values. Recipe-wide sections (model, policy, tasks, simulator, judge, reward, seed) count for
    every finished stage; a stage's own section counts for it; a finished stage missing from `new` is named too."""
    shared = _diff(old.model_dump(mode="json", exclude=set(_RECORD_NEUTRAL)),
                   new.model_dump(mode="json", exclude=set(_RECORD_NEUTRAL)), "")
    shared = [line.removeprefix(".") for line in shared]
    new_by_label = {s.label: (i, s) for i, s in enumerate(new.stages)}
    changes: dict[str, list[str]] = {}
    for index, stage in enumerate(old.stages):
        if stage.label not in finished:
            continue
        lines = list(shared)
        if stage.label not in new_by_label:
            lines.append(f"stages.{index} (stage '{stage.label}' is no longer in the recipe)")
        else:
            new_index, after = new_by_label[stage.label]
            lines += _diff(stage.model_dump(mode="json"), after.model_dump(mode="json"), f"stages.{new_index}")
        if lines:
            changes[stage.label] = lines
    return changes


def check_world_size(paths: StagePaths, world_size: int, checkpoint: Path | None) -> None:
    """Refuse to continue `checkpoint` with another number of processes than the stage recorded in launch.json:
    the batch of a step would change. Without a checkpoint (a fresh start) any number is fine."""
    recorded = (paths.read_launch() or {}).get("world_size")
    if checkpoint is not None and isinstance(recorded, int) and recorded != world_size:
        raise CollabError(
            f"stage '{paths.label}' was started with {recorded} processes and would now be launched with "
            f"{world_size}; its checkpoint {checkpoint.name} cannot continue with another number of processes (the "
            "batch per step would change)",
            fix=f"launch with {recorded} processes (the accelerate config's num_processes, the number of visible "
            "GPUs, or --num_processes in COLLAB_ACCELERATE_ARGS), or start a new run with another output_dir.",
        )
