"""What a recipe key means, read from the schema: `collab recipes explain KEY` and the reference in docs/recipes.md.

The descriptions live next to the fields in schema.py (`Field(description=...)`); this module only finds a field by
its dotted key and renders it, so the help and the generated reference cannot drift from the code.
"""

from __future__ import annotations

import difflib
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from collab.config.load import EXTENDS, EXTENDS_DESCRIPTION, section_of
from collab.config.schema import Recipe, Stage
from collab.errors import CollabError

REFERENCE_BEGIN = "<!-- BEGIN generated reference: collab recipes explain --write-reference docs/recipes.md -->"
REFERENCE_END = "<!-- END generated reference -->"


@dataclass(frozen=True)
class KeyInfo:
    """One recipe key as the schema declares it."""

    key: str
    type: str
    default: str
    description: str
    section: type[BaseModel] | None  # the section class the key opens, when it is one


def stage_classes() -> dict[str, type[BaseModel]]:
    """Stage class of each stage kind, read from the `kind` literals of the `Stage` union."""
    union = typing.get_args(Stage)[0]
    classes: dict[str, type[BaseModel]] = {}
    for cls in typing.get_args(union):
        for kind in typing.get_args(cls.model_fields["kind"].annotation):
            classes[kind] = cls
    return classes


def explain(key: str) -> KeyInfo:
    """The schema's entry for a dotted key (`reward.window`, `stages.dpo.trainer`, `simulator.backend`, `` for all).

    A stage's fields are addressed through its kind (`stages.data.candidates`). An unknown key is a CollabError that
    names the closest valid keys at the level where the path went wrong."""
    parts = [p for p in key.strip().split(".") if p]  # no key: the recipe itself, with its top-level keys
    if parts == [EXTENDS]:  # read by the loader before the schema sees the recipe
        return KeyInfo(EXTENDS, "str", "-", EXTENDS_DESCRIPTION, None)
    model: type[BaseModel] = Recipe
    info = _section_info("", Recipe)
    i = 0
    while i < len(parts):
        part, shown = parts[i], ".".join(parts[: i + 1])
        if model is Recipe and part == "stages" and i + 1 < len(parts):
            kinds = stage_classes()
            kind = parts[i + 1]
            if kind not in kinds:
                _unknown(".".join(parts[: i + 2]), kind, list(kinds), "stages", what="stage kind")
            model = kinds[kind]
            info = _section_info(".".join(parts[: i + 2]), model)
            i += 2
            continue
        field = model.model_fields.get(part)
        if field is None:
            _unknown(shown, part, list(model.model_fields), ".".join(parts[:i]))
        info = _field_info(shown, field)
        if info.section is None and i + 1 < len(parts):
            raise CollabError(f"'{shown}' is a value ({info.type}), not a section, so '{key}' names nothing",
                              where="collab recipes explain", fix=f"explain '{shown}' itself.")
        model = info.section or model
        i += 1
    return info


def render(info: KeyInfo, width: int = 100) -> str:
    """The text `collab recipes explain` prints: key, type, default, description, and a section's keys."""
    lines = [info.key or "(the recipe)", f"  type:    {info.type}", f"  default: {info.default}", ""]
    lines += textwrap.wrap(info.description, width, initial_indent="  ", subsequent_indent="  ")
    if info.section is not None:
        prefix = f"{info.key}." if info.key else ""
        lines += ["", "  keys:"]
        for name, field in info.section.model_fields.items():
            sub = _field_info(prefix + name, field)
            lines.append(f"    {prefix + name}  ({sub.type}; default {sub.default})")
        if info.section is Recipe:
            lines.append(f"    stages.KIND.KEY  (KIND: {', '.join(stage_classes())})")
    return "\n".join(lines)


def reference_markdown() -> str:
    """Every key of the schema as Markdown tables, one per section; a section used twice is described once."""
    out: list[str] = []
    seen: dict[type[BaseModel], str] = {}
    _reference_section(out, seen, "", Recipe)
    kinds = stage_classes()
    for cls in dict.fromkeys(kinds.values()):
        names = [k for k, c in kinds.items() if c is cls]
        _reference_section(out, seen, f"stages.{'|'.join(names)}", cls)
    return "\n".join(out).rstrip("\n") + "\n"


def write_reference(path: Path) -> bool:
    """Replace the generated reference between its markers in `path`; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    if REFERENCE_BEGIN not in text or REFERENCE_END not in text:
        raise CollabError(f"{path} has no generated-reference markers", where=str(path),
                          fix=f"put the lines\n{REFERENCE_BEGIN}\n{REFERENCE_END}\nwhere the reference goes.")
    head, rest = text.split(REFERENCE_BEGIN, 1)
    tail = rest.split(REFERENCE_END, 1)[1]
    updated = f"{head}{REFERENCE_BEGIN}\n{reference_markdown()}{REFERENCE_END}{tail}"
    if updated == text:
        return False
    path.write_text(updated, encoding="utf-8")
    return True


def _reference_section(out: list[str], seen: dict[type[BaseModel], str], key: str, cls: type[BaseModel]) -> None:
    seen[cls] = key
    title = f"`{key}`" if key else "top level"
    out += [f"### {title} ({cls.__name__})", "", _summary(cls), "", "| key | type | default | description |",
            "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in cls.model_fields.items():
        if cls is Recipe and name == "stages":
            info = _field_info(name, field)
            out.append(_row(name, info, info.description + " Their keys: one section per stage kind, below."))
            continue
        info = _field_info(f"{key}.{name}" if key else name, field)
        description = info.description
        if info.section is not None:
            if info.section in seen:
                description += f" Its keys: see `{seen[info.section] or 'top level'}`."
            else:
                seen[info.section] = info.key
                nested.append((info.key, info.section))
                description += f" Its keys: see `{info.key}` below."
        out.append(_row(name, info, description))
    out.append("")
    for sub_key, sub_cls in nested:
        _reference_section(out, seen, sub_key, sub_cls)


def _row(name: str, info: KeyInfo, description: str) -> str:
    cells = [f"`{name}`", info.type, f"`{info.default}`", description]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _section_info(key: str, cls: type[BaseModel]) -> KeyInfo:
    return KeyInfo(key, f"section ({cls.__name__})", "(its keys' defaults)", _summary(cls), cls)


def _summary(cls: type[BaseModel]) -> str:
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def _field_info(key: str, field: FieldInfo) -> KeyInfo:
    # A list of sections (`stages`) is not one section: its entries are reached through their kind.
    section = None if typing.get_origin(field.annotation) is list else section_of(field.annotation)
    description = field.description or ""
    kind = _type_name(field.annotation) + _bounds(field)
    if field.is_required():
        default = "required"
    else:
        value = field.get_default(call_default_factory=True)
        default = "(its keys' defaults)" if isinstance(value, BaseModel) else _yaml(value)
    return KeyInfo(key, kind, default, description, section)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"section ({annotation.__name__})"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "<="),
           (annotated_types.Lt, "lt", "<"), (annotated_types.MinLen, "min_length", "at least"))


def _bounds(field: FieldInfo) -> str:
    shown = []
    for item in field.metadata:
        for cls, attr, word in _BOUNDS:
            if isinstance(item, cls):
                unit = " items" if attr == "min_length" else ""
                shown.append(f"{word} {getattr(item, attr)}{unit}")
    return f", {', '.join(shown)}" if shown else ""


def _yaml(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "null"
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _unknown(shown: str, part: str, valid: list[str], parent: str, what: str = "key") -> typing.NoReturn:
    close = difflib.get_close_matches(part, valid, n=3, cutoff=0.5)
    prefix = f"{parent}." if parent else ""
    hint = f"did you mean {', '.join(repr(prefix + c) for c in close)}? " if close else ""
    raise CollabError(f"'{shown}' is not a recipe {what}", where="collab recipes explain",
                      fix=f"{hint}valid {what}s after '{parent or '(top level)'}': {', '.join(valid)}.")
