"""humaneval-chat: 164 HumanEval problems as sharded code tasks, a fixed 132/32 split, canonical answers pass."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from collab.tasks.humaneval_chat import humaneval_rows, opening_request, split_numbers
from collab.tasks.record import Task
from collab.tasks.registry import load_task_set

PINNED_TEST_NUMBERS = [
    8, 13, 15, 16, 20, 25, 34, 36, 43, 55, 62, 64, 75, 79, 82, 88,
    92, 96, 101, 108, 112, 121, 123, 124, 127, 131, 133, 136, 139, 140, 142, 162,
]  # fmt: skip


@pytest.fixture(scope="module")
def everything() -> dict[str, Task]:
    return {t.metadata["task_id"]: t for t in load_task_set("humaneval-chat", split="all")}


def _run_checks(tasks: list[Task]) -> dict[str, str]:
    """Run each task's answer against its tests in one child interpreter; task id -> "ok" or the failure."""
    program = (
        "import json, sys\n"
        "results = {}\n"
        "for task in json.load(sys.stdin):\n"
        "    namespace = {}\n"
        "    try:\n"
        "        exec(task['answer'] + '\\n\\n' + task['tests'], namespace)\n"
        "        namespace['check'](namespace[task['entry_point']])\n"
        "        results[task['id']] = 'ok'\n"
        "    except BaseException as exc:\n"
        "        results[task['id']] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(results))\n"
    )
    payload = json.dumps([t.model_dump(include={"id", "answer", "tests", "entry_point"}) for t in tasks])
    done = subprocess.run(
        [sys.executable, "-c", program], input=payload, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def test_split_sizes_are_132_train_32_test_164_all() -> None:
    sizes = [len(load_task_set("humaneval-chat", split=s)) for s in ("train", "test", "all")]
    assert sizes == [132, 32, 164]


def test_test_split_is_pinned_and_disjoint_from_train() -> None:
    assert split_numbers("test") == PINNED_TEST_NUMBERS
    train = set(split_numbers("train"))
    assert not train & set(PINNED_TEST_NUMBERS)
    assert train | set(PINNED_TEST_NUMBERS) == set(range(164))


def test_seed_does_not_move_the_split() -> None:
    assert load_task_set("humaneval-chat", split="test", seed=7) == load_task_set("humaneval-chat", split="test")


def test_limit_keeps_the_first_tasks_in_task_order() -> None:
    assert [t.id for t in load_task_set("humaneval-chat", split="test", limit=3)] == [
        "humaneval-008", "humaneval-013", "humaneval-015",
    ]  # fmt: skip


def test_fields_map_from_the_humaneval_row(everything: dict[str, Task]) -> None:
    for row in humaneval_rows():
        task = everything[row["task_id"]]
        assert task.kind == "code"
        assert task.goal == row["prompt"]
        assert task.answer == row["prompt"] + row["canonical_solution"]
        assert task.tests == row["test"] and "def check(candidate)" in task.tests
        assert task.entry_point == row["entry_point"]
        assert task.needs_clarification == bool(task.facts)


def test_opening_is_one_sentence_naming_the_function(everything: dict[str, Task]) -> None:
    for task in everything.values():
        assert task.opening is not None
        assert task.opening.startswith(f"Can you write a Python function `{task.entry_point}`")
        assert task.opening.endswith("?") and "\n" not in task.opening


def test_opening_turns_the_first_docstring_sentence_into_a_request(everything: dict[str, Task]) -> None:
    assert everything["HumanEval/0"].opening == (
        "Can you write a Python function `has_close_elements` that checks if in given list of numbers, "
        "are any two numbers closer to each other than given threshold?"
    )
    assert everything["HumanEval/53"].opening == "Can you write a Python function `add` that adds two numbers x and y?"
    assert everything["HumanEval/60"].opening == "Can you write a Python function `sum_to_n` that sums numbers from 1 to n?"


def test_opening_request_handles_given_clauses_and_unknown_shapes() -> None:
    assert opening_request("f", "Given a string, find out how many distinct characters it has.") == (
        "Can you write a Python function `f` that, given a string, finds out how many distinct characters it has?"
    )
    assert opening_request("g", "Imagine a road that's a straight line.") == (
        "Can you write a Python function `g` for this task: imagine a road that's a straight line?"
    )
    assert opening_request("h", "") == "Can you write a Python function `h`?"


def test_each_doctest_example_is_its_own_fact_with_its_output(everything: dict[str, Task]) -> None:
    assert everything["HumanEval/0"].facts == (
        ">>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse",
        ">>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nTrue",
    )


def test_remaining_docstring_sentences_become_facts_before_examples(everything: dict[str, Task]) -> None:
    facts = everything["HumanEval/12"].facts
    assert facts[:2] == (
        "Return the first one in case of multiple strings of the same length.",
        "Return None in case the input list is empty.",
    )
    assert facts[2:] == (
        ">>> longest([])", ">>> longest(['a', 'b', 'c'])\n'a'", ">>> longest(['a', 'bb', 'ccc'])\n'ccc'",
    )  # fmt: skip


def test_every_doctest_line_of_the_prompt_reaches_some_fact(everything: dict[str, Task]) -> None:
    for task in everything.values():
        doctest_lines = [line.strip() for line in task.goal.splitlines() if line.strip().startswith(">>>")]
        facts_text = "\n".join(task.facts)
        for line in doctest_lines:
            if task.entry_point in line:
                assert line in facts_text, (task.id, line)


def test_problem_with_a_one_sentence_docstring_needs_no_clarification(everything: dict[str, Task]) -> None:
    task = everything["HumanEval/83"]
    assert task.facts == () and task.needs_clarification is False
    assert sum(t.needs_clarification for t in everything.values()) == 163


def test_canonical_answers_pass_their_tests_for_the_test_split() -> None:
    results = _run_checks(load_task_set("humaneval-chat", split="test"))
    assert results == {f"humaneval-{n:03d}": "ok" for n in PINNED_TEST_NUMBERS}


def test_the_check_harness_reports_a_wrong_answer(everything: dict[str, Task]) -> None:
    task = everything["HumanEval/53"]
    wrong = task.model_copy(update={"answer": task.goal + "    return x - y\n"})
    assert _run_checks([wrong])[task.id].startswith("AssertionError")
