"""Loading recipes: YAML reading, dotted `--set` overrides, validation and errors that name the file and key."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from collab.config.schema import DataStage, EvalStage, Recipe, TrainerStage
from collab.config.trainer_args import check_trainer_args, coerce_trainer_args
from collab.errors import CollabError
from collab.stages.kinds import KINDS


def _split_path(path: str) -> list[str]:
    return [p for p in path.split(".") if p]


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` to the raw recipe; the value is parsed as YAML (`3`, `true`, `[1, 2]`, `null`).

    A list element is addressed by index (`stages.1.trainer.beta=0.2`) or, for stages, by name (`stages.dpo...`).
    """
    if "=" not in assignment:
        raise CollabError(f"--set '{assignment}' has no '='", fix="write --set key.path=value.")
    path, _, text = assignment.partition("=")
    keys = _split_path(path.strip())
    if not keys:
        raise CollabError(f"--set '{assignment}' names no key", fix="write --set key.path=value.")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CollabError(f"--set {path}: the value is not valid YAML ({e})", fix="quote it.") from None
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            index = _list_index(node, key, ".".join(keys[: depth + 1]))
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise CollabError(
                f"--set {path}: '{'.'.join(keys[:depth])}' is a value, not a section", fix="check the key path."
            )
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def _list_index(node: list[Any], key: str, shown: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(node) <= index < len(node):
            return index
        raise CollabError(f"--set {shown}: index out of range (the list has {len(node)} items)")
    for i, item in enumerate(node):
        if isinstance(item, dict) and (item.get("name") or item.get("kind")) == key:
            return i
    raise CollabError(f"--set {shown}: no list item named '{key}'", fix="use its index or its name.")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe. Any problem is a CollabError naming the file and key."""
    path = Path(path)
    raw = _read_with_base(path, ())
    raw.setdefault("name", path.stem)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_recipe(raw, source=str(path))


EXTENDS = "extends"
EXTENDS_DESCRIPTION = (
    "Path of another recipe (relative to this file) that this one is laid over. Sections merge key by key, this "
    "file winning; a list, or a section whose `kind` this file changes, is replaced whole; `name`, `output_dir` and "
    "`stages` are never inherited. Read before validation; the saved resolved recipe is the merged one.")
# What a recipe never takes from the one it extends: its own name and run directory, and its own stages.
_NOT_INHERITED = ("name", "output_dir", "stages")


def _read_with_base(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The recipe's mapping, laid over the recipe it `extends` (a path relative to this file), if any.

    Sections merge key by key, the extending file winning; a list (such as `models`) is replaced whole, and so is a
    section whose `kind` the extending file changes (an `openai` policy's model and price mean nothing to an `hf`
    one); `name`, `output_dir` and `stages` are never inherited, so a recipe that extends another gets its own run
    directory (`runs/{name}` unless it says otherwise) and runs only its own stages. The resolved recipe a run saves
    is the merged one, so `collab resume` needs neither file.
    """
    raw = _read_mapping(path)
    base = raw.pop(EXTENDS, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise CollabError(f"must be the path of another recipe, not {base!r}", where=f"{path}: {EXTENDS}",
                          fix="write e.g. `extends: quickstart.yaml` (relative to this file).")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve(), base_path))
        raise CollabError(f"recipes extend each other in a circle ({cycle})", where=f"{path}: {EXTENDS}",
                          fix="let one of them stand alone.")
    if not base_path.is_file():
        raise CollabError(f"`{base}` names no file ({base_path} does not exist)", where=f"{path}: {EXTENDS}",
                          fix="give the path of the recipe to extend, relative to this file.")
    inherited = {k: v for k, v in _read_with_base(base_path, (*chain, path.resolve())).items()
                 if k not in _NOT_INHERITED}
    return _merged(inherited, raw)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        same_kind = isinstance(below, dict) and isinstance(value, dict) and value.get("kind", below.get("kind")) == \
            below.get("kind")
        out[key] = _merged(below, value) if same_kind else value  # type: ignore[arg-type]
    return out


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise CollabError(f"recipe file {path} does not exist{hint}", fix="give the path of a .yaml recipe "
                          "(`collab recipes list` shows the shipped ones).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CollabError(f"{path} is not valid UTF-8 (byte {e.start})", fix="save the recipe as UTF-8.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CollabError(f"{path} is not valid YAML: {e}", fix="correct the YAML syntax at that line.") from None
    if raw is None:
        # An empty file is a mistake (a save that failed, the wrong path), never a wish for every default.
        raise CollabError(f"recipe file {path} is empty", fix="write the recipe's sections into it (start from one "
                          "of `collab recipes list`, e.g. recipes/quickstart.yaml).")
    if not isinstance(raw, dict):
        raise CollabError(f"{path} must hold a mapping of sections, not a {type(raw).__name__}",
                          fix="start the file with keys such as `name:`, `model:`, `stages:`.")
    return raw


def validate_recipe(raw: dict[str, Any], *, source: str = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise CollabError(format_validation_error(e, source)) from None
    problems = []
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, TrainerStage):
            for key, message in check_trainer_args(stage.kind, stage.trainer):
                where = f"stages.{i}.trainer" + (f".{key}" if key else "")
                problems.append(f"'{where}' (stage '{stage.label}') {message}")
    if problems:
        raise CollabError(f"{source}: " + "; ".join(problems).rstrip("?.") + ".",
                          fix="see the TRL documentation of that config class for valid arguments.")
    for stage in recipe.stages:
        if isinstance(stage, TrainerStage):
            stage.trainer = coerce_trainer_args(stage.kind, stage.trainer)
    return recipe


def format_validation_error(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        shown = _display_path(loc)
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1)
            parent = _display_path(loc[:-1])
            hint = f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""
            parts.append(f"unknown key '{shown}'{hint}; valid keys here: {', '.join(valid)}")
        elif item["type"] == "missing":
            parts.append(f"'{shown}' is required")
        else:
            got = item.get("input")
            got_text = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            parts.append(f"'{shown or '(top level)'}': {item['msg']} (got {got_text[:80]})")
    return f"{source}: invalid recipe: " + "; ".join(parts).rstrip(".") + "."


_STAGE_KINDS = set(KINDS)


def _display_path(loc: list[str]) -> str:
    # pydantic puts the discriminator value of a tagged union in the location: stages.0.dpo.trainer -> stages.0.trainer
    shown = [p for i, p in enumerate(loc) if not (p in _STAGE_KINDS and i > 0 and loc[i - 1].isdigit())]
    return ".".join(shown)


def _valid_keys(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for i, part in enumerate(loc):
        if part.isdigit() or model is None:
            continue
        if part in _STAGE_KINDS and i > 0 and loc[i - 1].isdigit():
            model = {"data": DataStage, "eval": EvalStage}.get(part, TrainerStage)
            continue
        field = model.model_fields.get(part)
        model = section_of(field.annotation) if field else None
    return sorted(model.model_fields) if model is not None else []


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section class an annotation holds (`X`, `X | None`, `list[X]`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = section_of(arg)
        if found is not None:
            return found
    return None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def save_resolved(recipe: Recipe, run_dir: Path) -> Path:
    """Write the fully resolved recipe into the run directory (atomically), so a resume uses exactly it."""
    from collab.io import atomic_write_text

    target = run_dir / "recipe.resolved.yaml"
    atomic_write_text(target, dump_recipe(recipe))
    return target


def recipes_root() -> Path:
    """The shipped recipes/ folder (next to the package in a source checkout), else ./recipes."""
    shipped = Path(__file__).resolve().parents[2] / "recipes"
    return shipped if shipped.is_dir() else Path("recipes")
