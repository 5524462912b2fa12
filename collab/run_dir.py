"""The run directory: the resolved recipe is written once, and a later start must agree with what it depends on."""

from __future__ import annotations

from pathlib import Path

from collab.config import Recipe, load_recipe, save_resolved
from collab.errors import CollabError
from collab.train.compat import breaking_differences
from collab.train.paths import RESOLVED_RECIPE


def started_stages(recipe: Recipe, run_dir: Path) -> list[str]:
    return [s.label for s in recipe.stages if (run_dir / s.label).exists()]


def open_run(recipe: Recipe, run_dir: Path) -> None:
    """Write the resolved recipe, after checking that a run already in `run_dir` can continue under it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise CollabError(f"output_dir {run_dir} is a file, not a folder",
                          fix="set output_dir to a folder (it is created when missing).")
    resolved = run_dir / RESOLVED_RECIPE
    if resolved.is_file():
        previous = load_recipe(resolved)
        started = started_stages(previous, run_dir)
        problems = breaking_differences(previous, recipe) if started else []
        if problems:
            raise CollabError(
                f"{run_dir} holds a run (stages {started} started) whose recipe differs from this one in what a "
                f"resume depends on: {'; '.join(problems)}",
                fix=f"train into a new directory (e.g. --set output_dir=runs/{recipe.name}-2), or continue the run as "
                f"it was started with `collab resume {run_dir}`.",
            )
    save_resolved(recipe, run_dir)


def load_run(run_dir: Path) -> Recipe:
    resolved = run_dir / RESOLVED_RECIPE
    if not resolved.is_file():
        what = "does not exist" if not run_dir.exists() else f"is not a run directory (no {RESOLVED_RECIPE} in it)"
        raise CollabError(f"{run_dir} {what}",
                          fix="give the output_dir of a run started with `collab train RECIPE` (runs/<name> by "
                          "default).")
    return load_recipe(resolved)
