"""Lost-in-Conversation modes as task transformations."""

from __future__ import annotations

import pytest

from collab.evaluate.modes import apply_mode, concat_message
from collab.tasks.record import Task

TASK = Task(
    id="apples",
    kind="math",
    goal="Tom has 3 boxes of apples. Each box holds 4 apples. How many apples does Tom have?",
    opening="Tom has some boxes of apples. How many apples does he have?",
    facts=("He has 3 boxes.", "Each box holds 4 apples."),
    answer="12",
    needs_clarification=True,
)


def test_sharded_keeps_the_task_unchanged() -> None:
    assert apply_mode(TASK, "sharded") is TASK


def test_full_opens_with_the_goal_and_holds_nothing_back() -> None:
    full = apply_mode(TASK, "full")
    assert full.opening == TASK.goal
    assert full.facts == ()
    assert full.needs_clarification is False
    assert full.metadata["sharded_needs_clarification"] is True
    assert (full.id, full.answer, full.goal) == (TASK.id, TASK.answer, TASK.goal)


def test_concat_puts_the_opening_and_every_fact_in_one_message() -> None:
    concat = apply_mode(TASK, "concat")
    assert concat.opening == (
        "Tom has some boxes of apples. How many apples does he have? He has 3 boxes. Each box holds 4 apples."
    )
    assert concat.facts == () and concat.needs_clarification is False
    assert concat.metadata["mode"] == "concat"


def test_concat_without_an_opening_uses_the_goals_first_sentence() -> None:
    task = TASK.model_copy(update={"opening": None})
    assert concat_message(task) == "Tom has 3 boxes of apples. He has 3 boxes. Each box holds 4 apples."


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mode 'chatty'"):
        apply_mode(TASK, "chatty")  # type: ignore[arg-type]
