"""Read and write task records as JSONL, one `Task` per line (format: docs/tasks.md).

Task files are often written by hand, so every way a file can be wrong becomes a `CollabError` that names the file,
the line and the field, and says how to fix it -- never a traceback. The same rules apply when writing, so a file
this module writes always loads again.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from collab.errors import CollabError
from collab.io import temp_file_beside
from collab.tasks.record import Task

MAX_LINE_BYTES = 10 * 1024 * 1024
"""Longest accepted line. A longer one is almost certainly not a hand-written task (a pasted dataset, a binary
file), and reading it whole would only make a giant error message."""

_FIELDS: tuple[str, ...] = tuple(Task.model_fields)
_REQUIRED: tuple[str, ...] = tuple(name for name, f in Task.model_fields.items() if f.is_required())
_KINDS: tuple[str, ...] = ("math", "code", "qa", "doc", "message")
_FORMAT_HINT = "See docs/tasks.md for the task record format."


def load_tasks_jsonl(path: str | os.PathLike[str]) -> list[Task]:
    """Every task in a JSONL file, in file order. Blank lines are skipped.

    Raises:
        CollabError: the file is missing or unreadable, a line is malformed (the message names the line and
            field), two tasks share an id, or the file holds no task at all.
    """
    file = Path(path)
    tasks: list[Task] = []
    first_line_of_id: dict[str, int] = {}
    for lineno, text in _read_lines(file):
        if not text.strip():
            continue
        task = _parse_line(text, file, lineno)
        if task.id in first_line_of_id:
            raise CollabError(
                f"field 'id': duplicate id {task.id!r} (first used on line {first_line_of_id[task.id]})",
                where=_where(file, lineno),
                fix="give every task in the file its own id.",
            )
        first_line_of_id[task.id] = lineno
        tasks.append(task)
    if not tasks:
        raise CollabError(
            "the file contains no tasks (it is empty or has only blank lines)",
            where=str(file),
            fix=f"write one JSON object per line, for example "
            f'{{"id": "t1", "kind": "math", "goal": "What is 2 + 3?", "answer": "5"}}. {_FORMAT_HINT}',
        )
    return tasks


def write_tasks_jsonl(path: str | os.PathLike[str], tasks: Iterable[Task]) -> Path:
    """Write tasks one per line (UTF-8, default-valued fields left out) and return the path.

    The file is replaced atomically, so a reader never sees half a file. Tasks that `load_tasks_jsonl` would
    reject (duplicate ids, a code task without tests) are refused here, before anything is written.
    """
    file = Path(path)
    lines: list[str] = []
    seen: set[str] = set()
    for index, task in enumerate(tasks):
        where = f"{file}, task #{index + 1} (id {task.id!r})"
        if task.id in seen:
            raise CollabError(f"field 'id': duplicate id {task.id!r}", where=where, fix="make task ids unique.")
        seen.add(task.id)
        _check_kind_rules(task, where)
        record = task.model_dump(mode="json", exclude_defaults=True)
        # Written so that the file loads again under the agreement rule of _check_clarification_agrees.
        if task.facts:
            record["needs_clarification"] = task.needs_clarification
        elif task.needs_clarification:
            record["metadata"] = {**task.metadata, CLARIFICATION_OVERRIDE: True}
        lines.append(json.dumps(record, ensure_ascii=False))
    if not lines:
        raise CollabError("no tasks to write", where=str(file), fix="pass at least one task.")
    fd, tmp = temp_file_beside(file, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write("\n".join(lines) + "\n")
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def _where(file: Path, lineno: int) -> str:
    return f"{file}, line {lineno}"


def _read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded text) for each line, never holding more than MAX_LINE_BYTES of one line."""
    try:
        handle = file.open("rb")
    except FileNotFoundError:
        raise CollabError(
            "task file not found", where=str(file), fix="check the path, or use a registered task set name."
        ) from None
    except IsADirectoryError:
        raise CollabError("is a directory, not a task file", where=str(file), fix="point at a .jsonl file.") from None
    except OSError as exc:
        raise CollabError(f"cannot open task file: {exc.strerror}", where=str(file)) from None
    with handle:
        lineno = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise CollabError(
                    f"line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB; it was not read",
                    where=_where(file, lineno),
                    fix="put one task per line and keep each task under 10 MB (store big documents elsewhere); "
                    "check that this is really a JSONL task file.",
                )
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark, as some editors write it
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CollabError(
                    f"not valid UTF-8 (byte {exc.start + 1} of the line is {raw[exc.start:exc.start + 1]!r})",
                    where=_where(file, lineno),
                    fix="save the file as UTF-8.",
                ) from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_line(text: str, file: Path, lineno: int) -> Task:
    where = _where(file, lineno)
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise CollabError(
            f"field {exc.key!r} appears twice in one object", where=where, fix="keep only one of them."
        ) from None
    except json.JSONDecodeError as exc:
        raise CollabError(
            f"invalid JSON at column {exc.colno}: {exc.msg}",
            where=where,
            fix="each non-blank line must be one complete JSON object (no trailing commas, double-quoted "
            "strings, no line breaks inside an object).",
        ) from None
    except RecursionError:
        raise CollabError("invalid JSON: nested too deeply", where=where) from None
    if not isinstance(obj, dict):
        raise CollabError(
            f"expected a JSON object {{...}}, got {_json_type(obj)}",
            where=where,
            fix=f"write each task as an object with fields {', '.join(_REQUIRED)}. {_FORMAT_HINT}",
        )
    try:
        task = Task.model_validate(obj)
    except ValidationError as exc:
        message, fix = _explain(exc, obj)
        raise CollabError(message, where=where, fix=fix) from None
    flag = obj.get("needs_clarification", False)
    if not isinstance(flag, bool):
        # Lax validation would read "yes", "false" or 1 as a boolean; a hand-written file should say what it means.
        raise CollabError(
            f"field 'needs_clarification': expected true or false, got {_json_type(flag)}",
            where=where,
            fix=_TYPE_FIXES["needs_clarification"],
        )
    _check_kind_rules(task, where)
    _check_clarification_agrees(task, obj, where)
    return task


CLARIFICATION_OVERRIDE = "clarification_override"
"""`metadata` key that accepts `needs_clarification: true` without `facts` (docs/tasks.md, "How facts and
needs_clarification must agree")."""


def _check_clarification_agrees(task: Task, obj: dict[str, Any], where: str) -> None:
    """`facts` and `needs_clarification` must tell one story. Left to its default, needs_clarification would make a
    task with withheld facts count as complete, so asking for them would score as over-asking; a task that needs
    clarification with nothing withheld gives a scripted user nothing to reveal."""
    if task.facts and "needs_clarification" not in obj:
        raise CollabError(
            f"field 'needs_clarification': missing, but the task has {len(task.facts)} facts the user holds back; "
            "left out, it would mean false and a question asking for those facts would count as over-asking",
            where=where,
            fix='add "needs_clarification": true when the opening lacks something the facts give (the assistant '
            'should ask), or "needs_clarification": false when the opening is complete and the facts are optional '
            "details.",
        )
    if task.needs_clarification and not task.facts and not task.metadata.get(CLARIFICATION_OVERRIDE):
        raise CollabError(
            "field 'facts': the task says needs_clarification: true but holds back no facts, so a scripted "
            "(sharded) user has nothing to reveal when the assistant asks",
            where=where,
            fix='add the withheld information as "facts": ["..."], or set "needs_clarification": false; when an '
            f'LLM user reveals the rest of the goal by itself, say so with "metadata": {{"{CLARIFICATION_OVERRIDE}": '
            "true}. See docs/tasks.md.",
        )


def _check_kind_rules(task: Task, where: str) -> None:
    """Rules that span fields, which the record itself does not enforce."""
    if task.kind == "message" and not task.required:
        raise CollabError(
            "field 'required': a task of kind 'message' needs the details its reply must contain",
            where=where,
            fix='give "required": [["Anna"], ["Tuesday"], ["3 pm", "3pm", "15:00"]] (one list of accepted '
            "spellings per detail), or use another kind.",
        )
    if task.kind != "code":
        return
    for name in ("tests", "entry_point"):
        if not getattr(task, name):
            raise CollabError(
                f"field {name!r}: a task of kind 'code' needs {name!r}",
                where=where,
                fix="give 'tests' (test code defining check(candidate)) and 'entry_point' (the function name), "
                "or use another kind.",
            )
    assert task.entry_point is not None
    if not task.entry_point.isidentifier():
        raise CollabError(
            f"field 'entry_point': {task.entry_point!r} is not a Python function name",
            where=where,
            fix="give the bare function name, e.g. \"has_close_elements\".",
        )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _explain(exc: ValidationError, obj: dict[str, Any]) -> tuple[str, str]:
    """The first validation problem as (message, fix), in the user's terms rather than pydantic's."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    field = _field_path(loc) or "?"
    kind = error["type"]
    top = str(loc[0]) if loc else ""
    if kind == "missing":
        return f"field {field!r}: missing required field", f"add {field!r}. Required fields: {', '.join(_REQUIRED)}."
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(top, _FIELDS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"field {top!r}: unknown field", f"{hint}Valid fields: {', '.join(_FIELDS)}."
    if top == "kind" and kind in ("literal_error", "string_type"):
        got = obj.get("kind")
        close = difflib.get_close_matches(str(got), _KINDS, n=1, cutoff=0.5) if isinstance(got, str) else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"field 'kind': {got!r} is not a task kind", f"{hint}Use one of {', '.join(_KINDS)}."
    got = _value_at(obj, loc)
    detail = str(error["msg"])
    if detail.startswith("Value error, "):
        detail = detail[len("Value error, "):]
    return (
        f"field {field!r}: {detail} (got {_json_type(got) if got is not _MISSING else 'nothing'})",
        _TYPE_FIXES.get(top, _FORMAT_HINT),
    )


_MISSING = object()

_TYPE_FIXES: dict[str, str] = {
    "id": 'use a non-empty string, e.g. "math-001".',
    "goal": "use a non-empty string: the complete request.",
    "opening": "use a string, or leave the field out to let the user simulator write the opening.",
    "facts": 'use a list of strings, e.g. ["Each box holds 12 apples."], or leave it out.',
    "answer": "use a string (numbers too: \"42\").",
    "tests": "use a string of test code defining check(candidate), or leave it out.",
    "entry_point": "use a string: the name of the function the tests call.",
    "needs_clarification": "use true or false (without quotes).",
    "metadata": "use a JSON object, or leave it out.",
}


def _value_at(obj: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return obj
