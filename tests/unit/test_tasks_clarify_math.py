"""clarify-math: exact answers, the two variants of one generator, and train/test disjoint in instances AND wording."""

from __future__ import annotations

import ast
import re
from fractions import Fraction

import pytest

from collab.errors import CollabError
from collab.tasks.clarify_math import TEMPLATES, generate, templates_for
from collab.tasks.record import Task
from collab.tasks.registry import load_task_set


@pytest.fixture(scope="module")
def train() -> list[Task]:
    return load_task_set("clarify-math", split="train")


@pytest.fixture(scope="module")
def test() -> list[Task]:
    return load_task_set("clarify-math", split="test")


def _evaluate(expression: str, numbers: dict[str, int]) -> Fraction:
    """Exact value of a + - * / expression over named numbers, without eval()."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Name):
            return Fraction(numbers[node.id])
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            ops = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}
            return ops[type(node.op)] if type(node.op) in ops else left / right
        raise AssertionError(f"unexpected node {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval"))


def _sentences(text: str) -> list[str]:
    return re.findall(r"[^.?]+[.?]", text)


def _skeleton(sentence: str) -> str:
    return re.sub(r"\d+", "#", sentence.strip())


def test_default_sizes_are_256_train_and_64_test(train: list[Task], test: list[Task]) -> None:
    assert (len(train), len(test)) == (256, 64)


def test_limit_beyond_the_default_gives_more_distinct_problems() -> None:
    tasks = load_task_set("clarify-math", split="test", limit=700)
    assert len(tasks) == 700
    assert len({t.goal for t in tasks}) == 700
    assert len({t.id for t in tasks}) == 700


def test_same_seed_gives_identical_tasks_and_another_seed_different_ones(train: list[Task]) -> None:
    assert load_task_set("clarify-math", split="train") == train
    other = load_task_set("clarify-math", split="train", seed=1)
    assert len({t.goal for t in other} & {t.goal for t in train}) < 10


def test_a_limit_gives_a_prefix_of_the_full_set(train: list[Task]) -> None:
    assert load_task_set("clarify-math", split="train", limit=40) == train[:40]


def test_variants_alternate_starting_with_underspecified(train: list[Task], test: list[Task]) -> None:
    for tasks in (train, test):
        assert [t.metadata["variant"] for t in tasks[:4]] == ["underspecified", "complete"] * 2
        assert all(t.needs_clarification == (i % 2 == 0) for i, t in enumerate(tasks))
        assert sum(t.needs_clarification for t in tasks) == len(tasks) // 2


def test_underspecified_opening_is_the_goal_without_exactly_the_withheld_sentence(train: list[Task]) -> None:
    for task in train[::2]:
        assert len(task.facts) == 1
        fact = task.facts[0]
        assert fact in task.goal and fact not in task.opening
        assert task.goal.replace(f" {fact}", "") == task.opening
        assert task.opening.endswith("?") and task.opening.count("?") == 1
        assert "_" not in task.opening and "?" not in task.opening[:-1]
        withheld = task.metadata["withheld"]
        assert str(task.metadata["numbers"][withheld]) in re.findall(r"\d+", fact)


def test_complete_opening_is_the_whole_goal_with_no_facts(train: list[Task]) -> None:
    for task in train[1::2]:
        assert task.opening == task.goal
        assert task.facts == ()
        assert "withheld" not in task.metadata


def test_the_documented_example_shape(train: list[Task]) -> None:
    first = train[0]
    assert first.metadata["template"] == "fruit-boxes" and first.metadata["steps"] == 1
    boxes, per_box = first.metadata["numbers"]["boxes"], first.metadata["numbers"]["per_box"]
    assert re.fullmatch(rf"\w+ has {boxes} boxes of (\w+)\. How many \1 does \w+ have\?", first.opening)
    assert re.fullmatch(rf"Each box holds {per_box} \w+\.", first.facts[0])
    assert first.answer == str(boxes * per_box)


def test_answers_equal_the_metadata_expression_over_the_metadata_numbers(train: list[Task], test: list[Task]) -> None:
    for task in train + test:
        numbers = task.metadata["numbers"]
        value = _evaluate(task.metadata["expression"], numbers)
        assert value.denominator == 1 and value >= 1
        assert task.answer == str(value.numerator)
        goal_numbers = re.findall(r"\d+", task.goal)
        assert sorted(goal_numbers) == sorted(str(v) for v in numbers.values())
        assert len(numbers) == task.metadata["steps"] + 1


def test_fruit_box_answers_recomputed_from_the_goal_text(train: list[Task]) -> None:
    """Independent of the generator's expression: read the story's numbers and do the arithmetic here."""
    checked = 0
    for task in train:
        if task.metadata["template"] != "fruit-boxes":
            continue
        numbers = [int(n) for n in re.findall(r"\d+", task.goal)]
        expected = numbers[0] * numbers[1]
        if task.metadata["steps"] >= 2:
            expected -= numbers[2]
        if task.metadata["steps"] == 3:
            expected += numbers[3]
        assert task.answer == str(expected), task.goal
        checked += 1
    assert checked == 32


def test_every_step_count_and_template_of_the_family_appears(train: list[Task], test: list[Task]) -> None:
    assert {(t.metadata["template"], t.metadata["steps"]) for t in train} == {
        (tpl.name, s) for tpl in templates_for("train") for s in (1, 2, 3)
    }
    assert {(t.metadata["template"], t.metadata["steps"]) for t in test} == {
        (tpl.name, s) for tpl in templates_for("test") for s in (1, 2, 3)
    }


def test_there_are_at_least_eight_templates_split_into_disjoint_families() -> None:
    names = [t.name for t in TEMPLATES]
    assert len(set(names)) == len(names) >= 8
    train_names = {t.name for t in templates_for("train")}
    test_names = {t.name for t in templates_for("test")}
    assert train_names and test_names and not train_names & test_names
    assert train_names | test_names == set(names)


def test_splits_share_no_instance_and_no_template(train: list[Task], test: list[Task]) -> None:
    assert not {t.goal for t in train} & {t.goal for t in test}
    assert not {t.metadata["template"] for t in train} & {t.metadata["template"] for t in test}
    assert {t.metadata["family"] for t in train} == {"train"} and {t.metadata["family"] for t in test} == {"test"}


def test_test_split_uses_no_sentence_wording_of_the_train_split() -> None:
    train_wording = {_skeleton(s) for t in generate("train", 1500) for s in _sentences(t.goal)}
    test_wording = {_skeleton(s) for t in generate("test", 500) for s in _sentences(t.goal)}
    assert not train_wording & test_wording


def test_goals_are_unique_within_a_split(train: list[Task], test: list[Task]) -> None:
    assert len({t.goal for t in train}) == len(train)
    assert len({t.goal for t in test}) == len(test)


def test_tasks_are_math_with_unique_ids(train: list[Task]) -> None:
    assert {t.kind for t in train} == {"math"}
    assert train[0].id == "clarify-math-train-00000"
    assert len({t.id for t in train}) == len(train)


def test_split_all_is_not_offered() -> None:
    with pytest.raises(CollabError, match="has no split 'all'"):
        load_task_set("clarify-math", split="all")
