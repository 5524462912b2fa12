"""MR against a scripted oracle policy whose right answer is known: outcomes alone must rank the actions.

The oracle plays every future assistant turn: it writes the message as soon as the conversation holds every detail
of the task, and otherwise asks for the first detail it lacks. Rollouts therefore differ only in what the
candidate caused. With `interactivity: none`, MR is task success plus the token term, so these tests show that
the outcome (did the message carry every detail, how many tokens it took) is what separates asking from guessing
and answering from needless questions, not a rule that credits asking.
"""

from __future__ import annotations

import pytest

from collab.backends.base import Backend, Request
from collab.chat import Generation
from collab.config import RewardConfig
from collab.metrics.details import detail_present
from collab.reward import Candidate, MultiturnReward
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.clarify_message import generate
from collab.tasks.record import Task

QUESTION_BY_SLOT = {
    "day": "Which day is it on?",
    "time": "What time is it at?",
    "place": "Which place is it at?",
    "item": "What was the present or order?",
}


def _message(task: Task, details: dict[str, str]) -> str:
    name = task.required[0][0]
    return f"Hi {name}, a quick note: " + ", ".join(details.values()) + ". See you then!"


class OracleMessagePolicy(Backend):
    """Writes the complete message once every detail was said by the user, else asks for the first missing one.

    It reads the task's details from the conversation only (the task is looked up by its opening), as a perfect
    assistant would; it never sees which detail was withheld."""

    identity = "oracle"

    def __init__(self, tasks: list[Task]) -> None:
        super().__init__("oracle")
        self.by_opening = {t.opening: t for t in tasks}

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        return [Generation(text=self._reply(r.messages)) for r in requests]

    def _reply(self, messages: list) -> str:
        user_text = " ".join(m["content"] for m in messages if m["role"] == "user")
        task = self.by_opening[next(m["content"] for m in messages if m["role"] == "user")]
        details = task.metadata["details"]
        missing = [slot for slot, value in details.items() if not detail_present((value.removeprefix("the "),), user_text)]
        if missing:
            return QUESTION_BY_SLOT[missing[0]]
        return _message(task, details)


def _guess(task: Task) -> str:
    """The complete message with the withheld detail invented (a wrong value)."""
    wrong = {"day": "Someday", "time": "noon", "place": "the moon", "item": "gadget"}
    details = {slot: (wrong[slot] if slot == task.metadata.get("withheld") else v)
               for slot, v in task.metadata["details"].items()}
    return _message(task, details)


TASKS = generate("train", 16)
UNDERSPECIFIED = [t for t in TASKS if t.needs_clarification]
COMPLETE = [t for t in TASKS if not t.needs_clarification]


def _mr(candidates: list[Candidate], window: int, give_up: float = 0.5) -> list[float]:
    reward = MultiturnReward(
        OracleMessagePolicy(TASKS),
        ShardedSimulator(max_turns=10, mode="withhold", give_up=give_up),
        RewardConfig(window=window, samples=4, token_lambda=0.001, interactivity="none"),
    )
    results = reward.score(candidates, seeds=[1000 * i for i in range(len(candidates))])
    assert all(r.mr is not None for r in results), [r.error for r in results]
    return [float(r.mr) for r in results]  # type: ignore[arg-type]


def _history(task: Task) -> list:
    return [{"role": "user", "content": task.opening}]


@pytest.mark.parametrize("window", [1, 2])
def test_asking_beats_guessing_on_underspecified_requests_from_outcomes_alone(window: int) -> None:
    for task in UNDERSPECIFIED:
        ask = QUESTION_BY_SLOT[task.metadata["withheld"]]
        mr_ask, mr_guess = _mr([Candidate(task, _history(task), ask), Candidate(task, _history(task), _guess(task))],
                               window)
        # Asking obtains the detail and the next turn delivers the full message; the guess is rejected.
        assert mr_ask > 0.9, (task.opening, mr_ask)
        assert mr_ask > mr_guess + 0.2, (task.opening, mr_ask, mr_guess)


@pytest.mark.parametrize("window", [1, 2])
def test_answering_beats_a_needless_question_on_complete_requests_from_outcomes_alone(window: int) -> None:
    for task in COMPLETE:
        answer = _message(task, task.metadata["details"])
        mr_answer, mr_question = _mr(
            [Candidate(task, _history(task), answer), Candidate(task, _history(task), "Which day is it on?")], window
        )
        assert mr_answer > 0.9
        # The needless question costs the turn it takes: its tokens, and the user's reply to read.
        assert mr_answer - mr_question > 0.004, (task.opening, mr_answer, mr_question)


def test_in_reveal_mode_a_wrong_answer_is_handed_the_fact_so_guessing_catches_up() -> None:
    """Why training uses `withhold`: under the Lost-in-Conversation user the guess is answered with the missing
    detail, and the oracle's next turn succeeds, so the outcome no longer tells asking from guessing."""
    task = UNDERSPECIFIED[0]
    reward = MultiturnReward(
        OracleMessagePolicy(TASKS), ShardedSimulator(max_turns=10, mode="reveal"),
        RewardConfig(window=1, samples=2, token_lambda=0.0, interactivity="none"),
    )
    ask, guess = reward.score([Candidate(task, _history(task), QUESTION_BY_SLOT[task.metadata["withheld"]]),
                               Candidate(task, _history(task), _guess(task))])
    assert ask.components["task"] == 1.0 and guess.components["task"] == 1.0


def test_a_question_is_never_scored_as_the_answer() -> None:
    """A rollout that ends on a question has no answer attempt: task 0, even when the question names the answer."""
    task = Task(id="apples", kind="math", goal="Tom has 3 boxes with 12 apples each. How many apples?",
                opening="Tom has 3 boxes with 12 apples each. How many apples?", answer="36")
    reward = MultiturnReward(OracleMessagePolicy(TASKS), ShardedSimulator(mode="withhold"),
                             RewardConfig(window=0, samples=1, token_lambda=0.0, interactivity="none"))
    [question, answer] = reward.score([Candidate(task, _history(task), "Is it 36?"),
                                       Candidate(task, _history(task), "The answer is 36.")])
    assert question.components["task"] == 0.0 and answer.components["task"] == 1.0


def test_without_giving_up_a_guess_still_loses_at_window_one_and_never_obtains_the_detail() -> None:
    """The gap comes from the rejected guess, not from the give-up coin: at window 1 the guess's next turn has no
    detail to use, and the user's reply to the guess reveals nothing."""
    reward = MultiturnReward(OracleMessagePolicy(TASKS), ShardedSimulator(max_turns=10, mode="withhold"),
                             RewardConfig(window=1, samples=2, token_lambda=0.0, interactivity="none"))
    for task in UNDERSPECIFIED:
        ask, guess = reward.score([Candidate(task, _history(task), QUESTION_BY_SLOT[task.metadata["withheld"]]),
                                   Candidate(task, _history(task), _guess(task))], seeds=[1, 2])
        assert ask.mr is not None and guess.mr is not None and ask.mr - guess.mr > 0.9
        assert all(info.get("fact_index") is None for r in guess.rollouts for info in r.user_info)


def test_a_question_that_carries_every_detail_is_not_scored_as_the_message() -> None:
    """Asking the user "Could you tell me when <the event> is at <the detail>?" drafts nothing: task 0, where the
    message with the same details scores 1 (an online DPO run learned to ask this way while it counted as the
    message)."""
    for task in COMPLETE:
        details = task.metadata["details"]
        question = f"Could you tell me when {task.required[0][0]}'s plan is, " + ", ".join(details.values()) + "?"
        reward = MultiturnReward(OracleMessagePolicy(TASKS), ShardedSimulator(mode="withhold"),
                                 RewardConfig(window=0, samples=1, token_lambda=0.0, interactivity="none"))
        [asked, wrote] = reward.score([Candidate(task, _history(task), question),
                                       Candidate(task, _history(task), _message(task, details))])
        assert asked.components["task"] == 0.0 and wrote.components["task"] == 1.0, (question, asked.components)
