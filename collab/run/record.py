"""The run directory: its resolved recipe is the record of what was run, so a later start must agree with it.

A stage that has finished (DONE) was run under the resolved recipe's settings; rerunning the run directory with
other settings for it is refused, naming each changed key, rather than skipping the stage and rewriting the record
(the record would then describe a run that never happened). `--restart-from STAGE` is the explicit way to run a
stage and the ones after it again under new settings: their folders are moved to `replaced/<time>/`, not deleted.
"""

from __future__ import annotations

import time
from pathlib import Path

from collab.config import Recipe, load_recipe, save_resolved
from collab.errors import CollabError
from collab.run.compat import breaking_differences, finished_stage_differences
from collab.run.layout import RESOLVED_RECIPE, finished_stages, started_stages

REPLACED = "replaced"


def open_run(recipe: Recipe, run_dir: Path, *, restart_from: str | None = None) -> None:
    """Write the resolved recipe, after checking that a run already in `run_dir` can continue under it.

    With `restart_from`, that stage and every later one start over: their folders are moved aside first.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise CollabError(f"output_dir {run_dir} is a file, not a folder",
                          fix="set output_dir to a folder (it is created when missing).")
    labels = [s.label for s in recipe.stages]
    if restart_from is not None and restart_from not in labels:
        raise CollabError(f"--restart-from: no stage named '{restart_from}'", fix=f"use one of {labels}.")
    resolved = run_dir / RESOLVED_RECIPE
    if resolved.is_file():
        previous = load_recipe(resolved)
        restarted = labels[labels.index(restart_from):] if restart_from is not None else []
        # The run as it will be once the restarted stages' folders are moved aside; they are moved only after the
        # checks pass, so a refused restart changes nothing.
        previous = previous.model_copy(update={"stages": [s for s in previous.stages if s.label not in restarted]})
        _check_finished_stages_agree(previous, recipe, run_dir)
        started = started_stages(previous, run_dir)
        problems = breaking_differences(previous, recipe) if started else []
        if problems:
            raise CollabError(
                f"{run_dir} holds a run (stages {started} started) whose recipe differs from this one in what a "
                f"resume depends on: {'; '.join(problems)}",
                fix=f"train into a new directory (e.g. --set output_dir=runs/{recipe.name}-2), or continue the run as "
                f"it was started with `collab resume {run_dir}`.",
            )
        _move_aside(run_dir, restarted)
    save_resolved(recipe, run_dir)


def _check_finished_stages_agree(previous: Recipe, recipe: Recipe, run_dir: Path) -> None:
    changes = finished_stage_differences(previous, recipe, finished_stages(previous, run_dir))
    if not changes:
        return
    keys = list(dict.fromkeys(line for lines in changes.values() for line in lines))
    first = next(s.label for s in previous.stages if s.label in changes)
    restart = (f"or run stage '{first}' and the ones after it again under the new settings with "
               f"`--restart-from {first}` (their folders are moved to {run_dir / REPLACED}/)")
    if first not in [s.label for s in recipe.stages]:
        restart = "or put the stage back into the recipe"
    raise CollabError(
        f"{run_dir} holds finished stages {list(changes)} that ran under other settings than this recipe's: "
        f"{'; '.join(keys)}. Rerunning would skip them and the run's record ({RESOLVED_RECIPE}) would no longer "
        "describe what was run",
        fix=f"train into a new directory (e.g. --set output_dir=runs/{recipe.name}-2), {restart}, or drop the "
        f"changes (`collab resume {run_dir}` continues with the recorded settings).",
    )


def _move_aside(run_dir: Path, labels: list[str]) -> None:
    """Move the folders of `labels` to replaced/<time>/, so they are run again and nothing is deleted."""
    present = [label for label in labels if (run_dir / label).exists()]
    if not present:
        return
    target = run_dir / REPLACED / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for label in present:
        (run_dir / label).rename(target / label)
    print(f"collab: --restart-from: moved {present} to {target}", flush=True)


def load_run(run_dir: Path) -> Recipe:
    resolved = run_dir / RESOLVED_RECIPE
    if not resolved.is_file():
        what = "does not exist" if not run_dir.exists() else f"is not a run directory (no {RESOLVED_RECIPE} in it)"
        raise CollabError(f"{run_dir} {what}",
                          fix="give the output_dir of a run started with `collab train RECIPE` (runs/<name> by "
                          "default).")
    return load_recipe(resolved)
