"""Opening a run directory: the resolved recipe is written once, and a later start must agree with it."""

from __future__ import annotations

from pathlib import Path

from collab.config import Recipe, dump_recipe, load_recipe, save_resolved
from collab.errors import CollabError

RESOLVED = "recipe.resolved.yaml"


def open_run(recipe: Recipe) -> tuple[Recipe, Path]:
    """Create the run directory, or reopen it when its resolved recipe is the same as this one."""
    run_dir = recipe.run_dir
    resolved = run_dir / RESOLVED
    if resolved.is_file():
        previous = load_recipe(resolved)
        if dump_recipe(previous) != dump_recipe(recipe):
            changed = _changed_keys(previous.model_dump(), recipe.model_dump())
            raise CollabError(
                f"{run_dir} was started with a different recipe (changed: {', '.join(changed[:8])})",
                fix=f"continue it with `collab resume {run_dir}`, or start a new run with "
                "--set output_dir=runs/NEW_NAME.",
            )
        return previous, run_dir
    save_resolved(recipe, run_dir)
    return recipe, run_dir


def load_run(run_dir: str | Path) -> tuple[Recipe, Path]:
    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED).is_file():
        raise CollabError(f"{run_dir} is not a collab run directory (no {RESOLVED} in it)",
                          fix="pass the output_dir of a run started with `collab train` or `collab data`.")
    return load_recipe(run_dir / RESOLVED), run_dir


def _changed_keys(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _changed_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [k for i, (x, y) in enumerate(zip(a, b)) for k in _changed_keys(x, y, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".")]
