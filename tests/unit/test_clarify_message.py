"""The clarify-message task set, its detail metric and what counts as drafting a message or asking the user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collab.errors import CollabError
from collab.metrics.details import detail_success
from collab.metrics.dialogue_acts import classify_turn
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.clarify_message import DEFAULT_SIZES, generate, templates_for
from collab.tasks.jsonl import load_tasks_jsonl
from collab.tasks.record import Task

REMINDER = Task(id="r", kind="message", goal="Write a short reminder for Felix about the team meeting at 7 pm.",
                opening="Write a short reminder for Felix about the team meeting.", facts=("The time is 7 pm.",),
                required=(("Felix",), ("7 pm", "7pm", "7 p.m.", "19:00")), needs_clarification=True)


@pytest.mark.parametrize("split", ["train", "test"])
def test_default_sizes_generate_distinct_balanced_requests(split: str) -> None:
    tasks = generate(split, DEFAULT_SIZES[split])
    assert len({t.goal + str(t.needs_clarification) for t in tasks}) == len(tasks)
    assert sum(t.needs_clarification for t in tasks) == len(tasks) // 2
    assert all(bool(t.facts) == t.needs_clarification for t in tasks)
    assert generate(split, 8) == tasks[:8]  # deterministic, and a smaller limit is a prefix


def test_train_and_test_share_no_template_name_or_place() -> None:
    train, test = generate("train", 64), generate("test", 64)
    assert {t.metadata["template"] for t in train}.isdisjoint(t.metadata["template"] for t in test)
    assert {t.required[0] for t in train}.isdisjoint(t.required[0] for t in test)
    assert {tpl.name for tpl in templates_for("train")}.isdisjoint(tpl.name for tpl in templates_for("test"))


def test_every_reference_message_is_an_answer_and_scores_one() -> None:
    for task in generate("train", 32) + generate("test", 32):
        assert classify_turn(task, task.answer) == "answer", task.answer
        assert detail_success(task, task.answer).value == 1.0, task.answer


def test_withheld_detail_is_only_in_the_fact_never_in_the_opening() -> None:
    for task in generate("test", 32):
        if task.needs_clarification:
            assert detail_success(task, task.opening or "").value == 0.0
            assert detail_success(task, f"{task.opening} {task.facts[0]}").value == 1.0


def test_details_need_whole_words_and_every_detail() -> None:
    assert detail_success(REMINDER, "Hi Felix, the team meeting is at 7 PM.").value == 1.0
    assert detail_success(REMINDER, "Hi Felix, the meeting is at 19:00.").value == 1.0
    assert detail_success(REMINDER, "Hi Felixa, the meeting is at 7 pm.").value == 0.0
    assert detail_success(REMINDER, "Hi Felix, the meeting is at 17 pm.").value == 0.0
    result = detail_success(REMINDER, "Hi Felix, the meeting is on Tuesday.")
    assert result.value == 0.0 and result.details["recall"] == 0.5 and result.details["missing"] == ["7 pm"]


def test_a_list_of_guesses_is_no_answer() -> None:
    assert detail_success(REMINDER, "Hi Felix, the meeting is at 6 pm, 7 pm or 8 pm.").value == 0.0
    day = REMINDER.model_copy(update={"required": (("Felix",), ("Friday", "Fridays"))})
    assert detail_success(day, "Hi Felix, the meeting is on Friday.").value == 1.0
    assert detail_success(day, "Hi Felix, the meeting is on Monday or Friday.").value == 0.0


def test_a_message_that_loops_on_one_sentence_fails_whatever_it_carries() -> None:
    loop = "Hi Felix, the meeting is at 7 pm. " + "Could you tell me when you are free? " * 3
    result = detail_success(REMINDER, loop)
    assert result.value == 0.0 and result.details["recall"] == 1.0
    assert result.details["repeated"] == "could you tell me when you are free?"
    glued = "Hi Felix, the meeting is at 7 pm." + "Could you tell me when you are free?" * 3
    assert detail_success(REMINDER, glued).details["repeated"] == "could you tell me when you are free?"
    twice = "Hi Felix, the meeting is at 7 pm. " + "See you there, Felix! " * 2
    assert detail_success(REMINDER, twice).value == 1.0  # a sentence said twice is poor style, not a loop


def test_a_message_that_repeats_a_short_line_three_times_fails() -> None:
    # The trained quickstart model's reply to test request 38, which the three-word rule let pass.
    reply = "Hi Felix,\n\n7 pm\nBienvenue,\n\nTheo\n\nTheo\n\nSports\n\nBienvenue,\n\nTheo\n\nBienvenue,"
    result = detail_success(REMINDER, reply)
    assert result.value == 0.0 and result.details["recall"] == 1.0 and result.details["repeated"] == "theo"
    signed = "Hi Felix, the meeting is at 7 pm.\n\nBest,\n\nHR\n\nHR"
    assert detail_success(REMINDER, signed).value == 1.0  # a line said twice is odd, not a loop


@pytest.mark.parametrize("slot", ["{location}", "[Your Name]", "[Date]"])
def test_a_message_with_an_unfilled_template_slot_fails(slot: str) -> None:
    result = detail_success(REMINDER, f"Hi Felix, the team meeting is at 7 pm at the {slot}.")
    assert result.value == 0.0 and result.details["recall"] == 1.0 and result.details["placeholder"] == slot
    assert detail_success(REMINDER, "Hi Felix, the team meeting is at 7 pm (room 4).").value == 1.0


@pytest.mark.parametrize("text, act", [
    ("Hi Felix, just a reminder that the team meeting is at 7 pm.", "answer"),
    ("Hi Felix, when you get a chance, remember the team meeting at 7 pm.", "answer"),
    ("Felix, if you can, please come to the team meeting at 7 pm.", "answer"),
    ("Hi Felix, could you come to the team meeting at 7 pm?", "answer"),
    ("Could you tell me what time the team meeting is?", "ask"),
    ("Could you tell me the time? Then I can write the reminder for Felix.", "ask"),
    # Questions to the user that carry the detail are still questions (the online DPO model's exploit, docs/online.md)
    ("Could you tell me when the team meeting is at 7 pm?", "ask"),
    ("Could you tell me when Felix's team meeting at 7 pm.?", "ask"),
    ("When is the team meeting at 7 pm?", "ask"),
    ("Can you confirm the team meeting is at 7 pm?", "ask"),
    ("Hi Felix, the team meeting is at 7 pm. What time works for the slides?", "ask_and_answer"),
    ("Sure!", "other"),
])
def test_drafted_messages_and_questions_to_the_user_are_told_apart(text: str, act: str) -> None:
    assert classify_turn(REMINDER, text) == act


@pytest.mark.parametrize("question, revealed", [
    ("What time is the meeting?", True),
    ("When is it?", True),
    ("Could you tell me more about the team meeting?", False),
    ("Who will attend the meeting?", False),
])
def test_the_withholding_user_answers_only_questions_about_the_missing_detail(question: str, revealed: bool) -> None:
    [turn] = ShardedSimulator(mode="withhold").respond([(REMINDER, [
        {"role": "user", "content": REMINDER.opening}, {"role": "assistant", "content": question}])])
    assert (turn.info["fact_index"] == 0) is revealed


def test_a_message_task_file_without_required_details_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "m1", "kind": "message", "goal": "Write a note to Ann.",
                                "needs_clarification": False}) + "\n")
    with pytest.raises(CollabError, match="required"):
        load_tasks_jsonl(path)
    path.write_text(json.dumps({"id": "m1", "kind": "message", "goal": "Write a note to Ann.",
                                "required": ["Ann", ["3 pm", "15:00"]], "needs_clarification": False}) + "\n")
    [task] = load_tasks_jsonl(path)
    assert task.required == (("Ann",), ("3 pm", "15:00"))
