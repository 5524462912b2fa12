"""CollabLLM's multi-turn hub datasets as task sets: `collabllm-math-hard`, `collabllm-bigcodebench`,
`collabllm-medium`.

The hub rows are conversation turns (columns prompt, completion, conv_id, score, single_turn_prompt,
single_turn_completion, single_turn_metadata, turn_id); a task is a conversation. One task per distinct conv_id,
built from its first turn:

    goal        <- single_turn_prompt (the complete request)
    opening     <- the first user message of `prompt`
    answer      <- single_turn_completion; for math the content of its last \\boxed{...} when there is one
    tests       <- single_turn_metadata["test"] (BigCodeBench), else a JSON single_turn_completion's "test";
                   BigCodeBench's unittest `TestCases` get a `check(candidate)` appended that runs them, so code
                   tasks keep the HumanEval contract (the tests call the function by name; `candidate` is unused)
    entry_point <- single_turn_metadata["entry_point"], else the JSON completion's "entry_point"
    metadata    <- source repo, conv_id, number of turns, and the remaining single_turn_metadata keys
    needs_clarification = True: these are collaborative, multi-turn tasks.

Rows come from `COLLAB_HUB_DATA_DIR` when that is set (files `<short-name>.jsonl` or `<short-name>.parquet`,
e.g. `math-hard.jsonl`), else from the hub via `datasets.load_dataset`. Splits are by conversation, never by row:
a conv_id goes to test when a hash of it falls in the lowest 20%, so every turn of one conversation lands in the
same split, independent of row order and of the run's seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from collab.errors import CollabError
from collab.tasks.record import Task, TaskKind
from collab.tasks.registry import register_task_set, unsupported_split

DATA_DIR_ENV = "COLLAB_HUB_DATA_DIR"
TEST_FRACTION = 0.2
COLUMNS: tuple[str, ...] = (
    "prompt", "completion", "conv_id", "score",
    "single_turn_prompt", "single_turn_completion", "single_turn_metadata",
)
"""Columns every row must have; `turn_id` is optional (it defaults to the length of `prompt`, as in CollabLLM)."""

HUB_DATASETS: dict[str, TaskKind] = {"math-hard": "math", "bigcodebench": "code", "medium": "doc"}
"""Short name (the part after `collabllm-multiturn-`) -> task kind."""

_TEST_KEYS = ("test", "tests", "test_code")
_CHECK_FOR_TESTCASES = '''


def check(candidate):
    """Added by collab: run the TestCases above. They call the function by name, so `candidate` is unused."""
    import io
    import unittest

    suite = unittest.defaultTestLoader.loadTestsFromTestCase(TestCases)
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    problems = [f"{test.id()}: {trace.strip().splitlines()[-1]}" for test, trace in result.failures + result.errors]
    assert result.wasSuccessful(), "; ".join(problems)
'''


def as_check_tests(tests: str) -> str:
    """Test code that defines check(candidate): HumanEval-style code as is, unittest TestCases with a runner."""
    if re.search(r"^def check\(", tests, re.MULTILINE) or not re.search(r"^class TestCases\b", tests, re.MULTILINE):
        return tests
    return tests.rstrip() + _CHECK_FOR_TESTCASES
_ENTRY_KEYS = ("entry_point", "entrypoint", "function_name")


def repo_id(short_name: str) -> str:
    return f"collabllm/collabllm-multiturn-{short_name}"


# ----------------------------------------------------------------------------------------------------------------
# Loading rows
# ----------------------------------------------------------------------------------------------------------------


def load_rows(short_name: str) -> list[dict[str, Any]]:
    """All rows of one dataset: from COLLAB_HUB_DATA_DIR when set, else from the hub."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        return _load_local(short_name, Path(data_dir).expanduser())
    try:
        return _load_from_hub(repo_id(short_name))
    except Exception as exc:  # any hub failure (offline, auth, missing repo) has the same fix
        raise CollabError(
            f"cannot load {repo_id(short_name)} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'})",
            where=f"collabllm-{short_name}",
            fix=f"to work offline, download the dataset where the hub is reachable, save its rows as "
            f"{short_name}.jsonl or {short_name}.parquet in a directory and set {DATA_DIR_ENV} to that directory "
            f"(see docs/tasks.md).",
        ) from None


def _load_from_hub(repo: str) -> list[dict[str, Any]]:
    """Every row of the hub dataset's train split. Kept separate so tests can stand in for the network."""
    import datasets  # heavy: imported only when the hub is actually used

    return [dict(row) for row in datasets.load_dataset(repo, split="train")]


def _load_local(short_name: str, data_dir: Path) -> list[dict[str, Any]]:
    names = (short_name, f"collabllm-multiturn-{short_name}")
    candidates = [data_dir / f"{name}{ext}" for name in names for ext in (".jsonl", ".parquet")]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise CollabError(
            f"no data file for collabllm-{short_name} in {data_dir}",
            where=DATA_DIR_ENV,
            fix=f"put {short_name}.jsonl or {short_name}.parquet there (rows with columns {', '.join(COLUMNS)}), "
            f"or unset {DATA_DIR_ENV} to load from the hub.",
        )
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise CollabError(f"cannot read parquet file: {exc}", where=str(path)) from None
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                where = f"{path}, line {lineno}"
                raise CollabError(f"invalid JSON at column {exc.colno}: {exc.msg}", where=where) from None
            if not isinstance(row, dict):
                raise CollabError("expected a JSON object per line", where=f"{path}, line {lineno}")
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Rows -> tasks
# ----------------------------------------------------------------------------------------------------------------


def _maybe_json(value: Any) -> Any:
    """Parquet and JSONL exports sometimes store structured columns as JSON strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _turn_id(row: dict[str, Any]) -> int:
    turn = row.get("turn_id")
    return int(turn) if turn is not None else len(_maybe_json(row["prompt"]) or [])


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None when there is none."""
    for marker in ("\\boxed{", "\\fbox{"):
        start = text.rfind(marker)
        if start < 0:
            continue
        depth, i = 1, start + len(marker)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(marker) : i - 1].strip()
    return None


def _first_user_message(prompt: Any, where: str) -> str:
    messages = _maybe_json(prompt)
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "user":
                content = str(message.get("content") or "")
                if content.strip():
                    return content
    raise CollabError("column 'prompt' holds no user message", where=where, fix="check the dataset export.")


def _first_key(mapping: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if mapping.get(key):
            return key, mapping[key]
    return None, None


def row_group_to_task(short_name: str, conv_id: Any, rows: list[dict[str, Any]]) -> Task:
    """The task of one conversation, from its first turn."""
    kind = HUB_DATASETS[short_name]
    where = f"collabllm-{short_name}, conv_id {conv_id!r}"
    first = min(rows, key=_turn_id)
    goal = str(first["single_turn_prompt"] or "")
    completion = first["single_turn_completion"]
    completion_text = completion if isinstance(completion, str) else json.dumps(completion, ensure_ascii=False)
    raw_meta = _maybe_json(first["single_turn_metadata"])
    extra: dict[str, Any] = dict(raw_meta) if isinstance(raw_meta, dict) else {}
    if raw_meta is not None and not isinstance(raw_meta, dict):
        extra = {"single_turn_metadata": raw_meta}
    tests: str | None = None
    entry_point: str | None = None
    answer = completion_text
    if kind == "math":
        answer = last_boxed(completion_text) or completion_text
    elif kind == "code":
        packed = _maybe_json(completion)  # CollabLLM packs {test, entry_point, answer, ...} as JSON here
        packed = packed if isinstance(packed, dict) else {}
        test_key, tests = _first_key(extra, _TEST_KEYS)
        if tests is None:
            _, tests = _first_key(packed, _TEST_KEYS)
        entry_key, entry_point = _first_key(extra, _ENTRY_KEYS)
        if entry_point is None:
            _, entry_point = _first_key(packed, _ENTRY_KEYS)
        for key in (test_key, entry_key):
            if key is not None:
                extra.pop(key)
        if isinstance(packed.get("answer"), str):
            answer = packed["answer"]
        if not (tests and entry_point):
            raise CollabError(
                "no tests or entry point in single_turn_metadata or single_turn_completion",
                where=where,
                fix="code tasks need single_turn_metadata keys 'test' and 'entry_point' (as in BigCodeBench).",
            )
    metadata: dict[str, Any] = {
        "source": repo_id(short_name),
        "conv_id": conv_id,
        "turns": len({_turn_id(row) for row in rows}),
        "rows": len(rows),
    }
    if extra:
        metadata["single_turn_metadata"] = extra
    return Task(
        id=f"collabllm-{short_name}-{conv_id}",
        kind=kind,
        goal=goal or _first_user_message(first["prompt"], where),
        opening=_first_user_message(first["prompt"], where),
        answer=answer,
        tests=as_check_tests(str(tests)) if tests else None,
        entry_point=str(entry_point) if entry_point else None,
        needs_clarification=True,
        metadata=metadata,
    )


def rows_to_tasks(short_name: str, rows: list[dict[str, Any]]) -> list[Task]:
    """One task per distinct conv_id, in order of first appearance."""
    groups: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    for index, row in enumerate(rows):
        missing = [column for column in COLUMNS if column not in row]
        if missing:
            raise CollabError(
                f"row {index} lacks column(s) {', '.join(missing)}",
                where=f"collabllm-{short_name}",
                fix=f"rows need the columns {', '.join(COLUMNS)} (and optionally turn_id).",
            )
        groups.setdefault(str(row["conv_id"]), (row["conv_id"], []))[1].append(row)
    return [row_group_to_task(short_name, conv_id, group) for conv_id, group in groups.values()]


def conversation_split(conv_id: Any) -> Literal["train", "test"]:
    """Split of a conversation: the same for all its rows, fixed across runs and row orders."""
    digest = hashlib.sha256(f"collabllm:{conv_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < TEST_FRACTION else "train"


def select_split(tasks: list[Task], split: str) -> list[Task]:
    if split == "all":
        return tasks
    return [task for task in tasks if conversation_split(task.metadata["conv_id"]) == split]


def _builder(short_name: str) -> Callable[[str, int | None, int], list[Task]]:
    name = f"collabllm-{short_name}"

    def build(split: str, limit: int | None, seed: int) -> list[Task]:
        del seed  # the split is by conversation hash, so a run's seed cannot move tasks between splits
        if split not in ("train", "test", "all"):
            raise unsupported_split(name, split, ("train", "test", "all"))
        tasks = select_split(rows_to_tasks(short_name, load_rows(short_name)), split)
        return tasks[:limit] if limit is not None else tasks

    build.__name__ = f"build_{short_name.replace('-', '_')}"
    build.__doc__ = f"Registered builder of {name}: tasks from {repo_id(short_name)}, split by conversation."
    return build


for _short in HUB_DATASETS:
    register_task_set(f"collabllm-{_short}")(_builder(_short))
