"""`collab eval` as a recipe: its flags fill one eval stage and the recipe sections that stage reads, and it runs
through `run_eval_stage` like the eval stage of any pipeline. The schema and every default live in collab.config;
a flag that is not given leaves its key at the recipe's default."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from collab.config import EvalStage, Recipe, format_validation_error
from collab.errors import CollabError
from collab.evaluate.runner import CONVERSATIONS_FILE, resolve_system_prompt, run_eval_stage

# Every flag of `collab eval` (its argparse dest) and the recipe keys it sets; `--max-turns` bounds both the
# assistant's turns (the stage) and the user's (the simulator), as one flag always has.
FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "models": ("stages.0.models",),
    "tasks": ("stages.0.tasks",),
    "split": ("stages.0.split",),
    "limit": ("stages.0.limit",),
    "task_seed": ("tasks.seed",),
    "runs": ("stages.0.runs",),
    "simulator": ("simulator.kind",),
    "simulator_model": ("simulator.backend",),
    "user_mode": ("simulator.mode",),
    "give_up": ("simulator.give_up",),
    "recap": ("simulator.recap",),
    "system_prompt": ("model.system_prompt",),
    "mode": ("stages.0.mode",),
    "max_turns": ("stages.0.max_turns", "simulator.max_turns"),
    "max_new_tokens": ("stages.0.max_new_tokens",),
    "temperature": ("stages.0.temperature",),
    "batch_size": ("stages.0.batch_size",),
    "seed": ("seed",),
    "resamples": ("stages.0.resamples",),
    "mr": ("stages.0.mr",),
    "wandb": ("tracking.wandb",),
}


def eval_recipe(flags: Mapping[str, Any]) -> tuple[Recipe, EvalStage]:
    """The recipe (named `eval`) and its one eval stage that `collab eval` flags describe.

    `flags` maps argparse dests to values; None means "not given". `--simulator-model` is a model spec
    (collab.factory.backend_config_for_spec), `--system-prompt` a text or a named prompt, and `--mr` is off unless
    given (the command reports MR on request; a recipe's eval stage always does). A value the schema refuses is a
    CollabError naming the flag.
    """
    from collab.factory import backend_config_for_spec

    _check_simulator_flags(flags)
    values = {dest: value for dest, value in flags.items() if dest in FLAG_KEYS and value is not None}
    values["mr"] = bool(flags.get("mr"))
    if "simulator_model" in values:
        values["simulator_model"] = backend_config_for_spec(values["simulator_model"], where="--simulator-model"
                                                            ).model_dump(exclude_defaults=True)
    if "system_prompt" in values:
        values["system_prompt"] = resolve_system_prompt(values["system_prompt"])
    raw: dict[str, Any] = {"name": "eval", "stages": [{"kind": "eval"}]}
    for dest, value in values.items():
        for key in FLAG_KEYS[dest]:
            _set(raw, key, value)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _flag_error(exc) from None
    return recipe, recipe.stages[0]  # type: ignore[return-value]


def run_eval_command(flags: Mapping[str, Any], out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """`collab eval`: build the recipe from `flags` and evaluate into `out` (its request cache in
    `out/cache.sqlite`; rerunning into `out` resumes). A failed evaluation removes an `out` folder it created and
    left without conversations."""
    if out.exists() and not out.is_dir():
        raise CollabError(f"--out {out} is a file, not a folder", fix="give a folder (it is created when missing).")
    recipe, stage = eval_recipe(flags)
    created = not out.exists()
    try:
        return run_eval_stage(recipe, stage, out, out_dir=out, echo=echo)
    except Exception:
        _remove_if_worthless(out, created)
        raise


def _check_simulator_flags(flags: Mapping[str, Any]) -> None:
    """Flag combinations the simulator section would refuse, said in terms of the flags."""
    if flags.get("simulator") != "llm":
        return
    if not flags.get("simulator_model"):
        raise CollabError("--simulator llm needs --simulator-model (the model that plays the user)")
    if flags.get("user_mode") not in (None, "reveal") or flags.get("give_up") or flags.get("recap"):
        raise CollabError("--user-mode, --give-up and --recap belong to the sharded user", where="--simulator",
                          fix="drop them, or use --simulator sharded.")


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node: Any = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[last] = value


def _flag_error(exc: ValidationError) -> CollabError:
    """The first refused value, named by its flag: `eval.runs: --runs must be at least 1 (got 0)`."""
    for item in exc.errors():
        loc = ".".join(str(p) for p in item["loc"] if p != "eval")  # pydantic names the stage's kind in its path
        dest = next((d for d, keys in FLAG_KEYS.items() if any(loc == k or loc.startswith(k + ".") for k in keys)),
                    None)
        if dest is None:
            continue
        ctx = item.get("ctx") or {}
        reason = {"greater_than_equal": f"must be at least {ctx.get('ge')}",
                  "less_than_equal": f"must be at most {ctx.get('le')}"}.get(item["type"], item["msg"])
        flag = "--" + dest.replace("_", "-")
        return CollabError(f"{flag} {reason} (got {item.get('input')!r})", where=f"eval.{dest}",
                           fix=f"see `collab eval --help` for {flag}.")
    return CollabError(format_validation_error(exc, "collab eval"))


def _remove_if_worthless(out: Path, created: bool) -> None:
    """A failed evaluation leaves no folder behind that it created and filled with nothing of value (a cache of
    requests that never produced a conversation); a folder that existed, or holds conversations, is kept."""
    if not created or not out.is_dir():
        return
    conversations = out / CONVERSATIONS_FILE
    if (out / "results.json").exists() or (conversations.is_file() and conversations.stat().st_size > 0):
        return
    shutil.rmtree(out, ignore_errors=True)
