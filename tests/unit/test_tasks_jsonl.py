"""Task files: every malformed input is a CollabError naming the file, the line and the field; good files round-trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from collab.errors import CollabError
from collab.tasks.jsonl import MAX_LINE_BYTES, load_tasks_jsonl, write_tasks_jsonl
from collab.tasks.record import Task

GOOD = {"id": "t1", "kind": "math", "goal": "What is 2 + 3?", "answer": "5"}


def _file(tmp_path: Path, *lines: str | dict) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n", encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(CollabError) as info:
        load_tasks_jsonl(path)
    return str(info.value)


def test_valid_file_loads_in_order_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD, "", "   ", {**GOOD, "id": "t2", "facts": ["a", "b"], "needs_clarification": True})
    tasks = load_tasks_jsonl(path)
    assert [t.id for t in tasks] == ["t1", "t2"]
    assert tasks[1].facts == ("a", "b") and tasks[1].needs_clarification is True


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD, "", "", {"id": "t2", "kind": "math"})
    assert f"{path}, line 4: field 'goal'" in _error(path)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "t2", "kind": "math", "goal": "caf\xe9"}\n')
    message = _error(path)
    assert f"{path}, line 2: not valid UTF-8" in message
    assert "save the file as UTF-8" in message


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert load_tasks_jsonl(path)[0].id == "t1"


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD, '{"id": "t2", "kind": "math", "goal": "x",}')
    message = _error(path)
    assert f"{path}, line 2: invalid JSON at column 42" in message
    assert "trailing commas" in message


def test_non_object_line_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, '["t1", "math", "What is 2 + 3?"]')
    assert f"{path}, line 1: expected a JSON object {{...}}, got an array" in _error(path)


def test_missing_required_field_names_it(tmp_path: Path) -> None:
    path = _file(tmp_path, {"id": "t1", "goal": "What is 2 + 3?"})
    message = _error(path)
    assert f"{path}, line 1: field 'kind': missing required field" in message
    assert "Required fields: id, kind, goal" in message


def test_number_where_a_string_belongs_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "answer": 5})
    message = _error(path)
    assert f"{path}, line 1: field 'answer'" in message and "got a number" in message
    assert 'numbers too: "42"' in message


def test_facts_as_one_string_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "facts": "Each box holds 12 apples."})
    message = _error(path)
    assert f"{path}, line 1: field 'facts': facts must be a list of strings" in message


def test_non_string_fact_names_its_index(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "facts": ["ok", 12]})
    assert f"{path}, line 1: field 'facts[1]'" in _error(path)


def test_quoted_boolean_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "needs_clarification": "false"})
    message = _error(path)
    assert f"{path}, line 1: field 'needs_clarification': expected true or false, got a string" in message


def test_metadata_must_be_an_object(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "metadata": ["level 1"]})
    assert f"{path}, line 1: field 'metadata'" in _error(path)


def test_unknown_field_suggests_the_closest_name(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "anwser": "5"})
    message = _error(path)
    assert f"{path}, line 1: field 'anwser': unknown field" in message
    assert "did you mean 'answer'?" in message


def test_unknown_kind_suggests_the_closest_kind(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "kind": "maths"})
    message = _error(path)
    assert f"{path}, line 1: field 'kind': 'maths' is not a task kind" in message
    assert "did you mean 'math'?" in message


def test_empty_id_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "id": ""})
    assert f"{path}, line 1: field 'id'" in _error(path)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD, {**GOOD, "id": "t2"}, {**GOOD, "goal": "Another"})
    message = _error(path)
    assert f"{path}, line 3: field 'id': duplicate id 't1' (first used on line 1)" in message


def test_duplicate_key_in_one_object_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, '{"id": "t1", "kind": "math", "goal": "a", "goal": "b"}')
    assert f"{path}, line 1: field 'goal' appears twice" in _error(path)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("", encoding="utf-8")
    message = _error(path)
    assert f"{path}: the file contains no tasks" in message


def test_blank_only_file_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, "", "  ", "\t")
    assert "contains no tasks" in _error(path)


def test_enormous_line_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    with path.open("wb") as out:
        out.write(json.dumps(GOOD).encode() + b"\n")
        out.write(b'{"id": "big", "kind": "doc", "goal": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n')
    message = _error(path)
    assert f"{path}, line 2: line is longer than 10 MB" in message
    assert len(message) < 600


def test_code_task_without_tests_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, {"id": "c1", "kind": "code", "goal": "def f(): ...", "entry_point": "f"})
    message = _error(path)
    assert f"{path}, line 1: field 'tests': a task of kind 'code' needs 'tests'" in message


def test_code_task_without_entry_point_is_rejected(tmp_path: Path) -> None:
    path = _file(tmp_path, {"id": "c1", "kind": "code", "goal": "def f(): ...", "tests": "def check(c): pass"})
    assert f"{path}, line 1: field 'entry_point': a task of kind 'code' needs 'entry_point'" in _error(path)


def test_code_task_entry_point_must_be_a_name(tmp_path: Path) -> None:
    task = {"id": "c1", "kind": "code", "goal": "g", "tests": "def check(c): pass", "entry_point": "f()"}
    path = _file(tmp_path, task)
    assert f"{path}, line 1: field 'entry_point': 'f()' is not a Python function name" in _error(path)


def test_missing_file_is_a_collab_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert f"{path}: task file not found" in _error(path)


def test_written_file_loads_back_identically(tmp_path: Path) -> None:
    tasks = [
        Task(id="m1", kind="math", goal="Tom has 3 boxes. Each holds 4. How many?",
             opening="Tom has 3 boxes. How many?", facts=("Each holds 4.",), answer="12",
             needs_clarification=True, metadata={"steps": 1}),
        Task(id="c1", kind="code", goal="def f(x):\n    ...", answer="def f(x):\n    return x",
             tests="def check(candidate):\n    assert candidate(1) == 1", entry_point="f"),
        Task(id="q1", kind="qa", goal="Qui a écrit « Candide » ?", answer="Voltaire"),
    ]
    path = write_tasks_jsonl(tmp_path / "sub" / "out.jsonl", tasks)
    assert load_tasks_jsonl(path) == tasks
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert "tests" not in first and "metadata" in first  # defaults are left out
    assert "Candide" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes


def test_writing_duplicate_ids_is_refused_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    task = Task(id="same", kind="qa", goal="q")
    with pytest.raises(CollabError, match="duplicate id 'same'"):
        write_tasks_jsonl(path, [task, task])
    assert not path.exists()


def test_writing_a_code_task_without_tests_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match="needs 'tests'"):
        write_tasks_jsonl(tmp_path / "out.jsonl", [Task(id="c", kind="code", goal="g", entry_point="f")])


def test_the_examples_in_docs_tasks_md_are_valid_task_lines(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"
    blocks = re.findall(r"```json\n(.*?)\n```", docs.read_text(encoding="utf-8"), re.DOTALL)
    path = tmp_path / "examples.jsonl"
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    tasks = load_tasks_jsonl(path)
    assert [t.kind for t in tasks] == ["math", "math", "code"]
    code = tasks[2]
    namespace: dict[str, object] = {}
    exec(code.answer + "\n" + (code.tests or ""), namespace)
    namespace["check"](namespace[code.entry_point or ""])  # type: ignore[operator]


def test_facts_without_needs_clarification_are_refused_naming_both_fixes(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "facts": ["It is in France."]})
    message = _error(path)
    assert f"{path}, line 1: field 'needs_clarification': missing, but the task has 1 facts" in message
    assert '"needs_clarification": true' in message and '"needs_clarification": false' in message


def test_facts_with_an_explicit_needs_clarification_false_load_as_complete(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "facts": ["It is in France."], "needs_clarification": False})
    [task] = load_tasks_jsonl(path)
    assert task.facts == ("It is in France.",) and task.needs_clarification is False


def test_needs_clarification_without_facts_is_refused_unless_overridden(tmp_path: Path) -> None:
    path = _file(tmp_path, {**GOOD, "needs_clarification": True})
    assert f"{path}, line 1: field 'facts': the task says needs_clarification: true but holds back no facts" in \
        _error(path)

    overridden = _file(tmp_path, {**GOOD, "needs_clarification": True, "metadata": {"clarification_override": True}})
    [task] = load_tasks_jsonl(overridden)
    assert task.needs_clarification is True and task.facts == ()


def test_written_tasks_state_their_clarification_so_they_load_again(tmp_path: Path) -> None:
    tasks = [Task(id="a", kind="qa", goal="g", facts=("f",), answer="x"),
             Task(id="b", kind="qa", goal="g", answer="x", needs_clarification=True)]
    loaded = load_tasks_jsonl(write_tasks_jsonl(tmp_path / "out.jsonl", tasks))
    assert loaded[0] == tasks[0]
    assert loaded[1].needs_clarification is True and loaded[1].metadata == {"clarification_override": True}
