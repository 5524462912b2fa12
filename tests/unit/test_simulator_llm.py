"""The LLM user simulator under hostile model output, injected at the Backend boundary, plus the registry."""

from __future__ import annotations

import json

import pytest

from collab.backends.base import Backend, Request
from collab.chat import Conversation, Generation, message
from collab.errors import CollabError
from collab.simulators.llm import LLMSimulator, goal_overlap, role_confusion
from collab.simulators.registry import make_simulator
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.record import Task


class ScriptedBackend(Backend):
    """Returns queued replies in request order and records every batch it was asked for."""

    def __init__(self, replies: list[str | Generation]) -> None:
        super().__init__("scripted")
        self.queue = list(replies)
        self.batches: list[list[Request]] = []

    @property
    def identity(self) -> str:
        return "scripted"

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        self.batches.append(requests)
        out: list[Generation] = []
        for _ in requests:
            reply = self.queue.pop(0)
            out.append(reply if isinstance(reply, Generation) else Generation(text=reply))
        return out


def reply(response: object, thought: str = "thinking") -> str:
    return json.dumps({"current_answer": "", "thought": thought, "response": response})


def task(i: int = 0, **changes: object) -> Task:
    fields: dict[str, object] = {
        "id": f"t{i}",
        "kind": "math",
        "goal": f"Tom has {i + 3} boxes of apples and each box holds 4 apples. How many apples does Tom have in all?",
        "opening": "I have a question about apples.",
        "facts": (f"He has {i + 3} boxes.", "Each box holds 4 apples."),
        "answer": str((i + 3) * 4),
    }
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


def waiting(i: int = 0) -> Conversation:
    return [message("user", "I have a question about apples."), message("assistant", "How many boxes are there?")]


def test_scripted_opening_needs_no_model_call() -> None:
    backend = ScriptedBackend([])
    turn = LLMSimulator(backend).respond([(task(), [])])[0]
    assert turn.text == "I have a question about apples."
    assert backend.batches == []


def test_opening_without_script_asks_the_model() -> None:
    backend = ScriptedBackend([reply("hey, can you help me with an apple problem")])
    turn = LLMSimulator(backend).respond([(task(opening=None), [])])[0]
    assert turn.text == "hey, can you help me with an apple problem"
    assert turn.info["reason"] == "opening"
    assert "first message" in backend.batches[0][0].messages[-1]["content"]


def test_one_batched_call_per_round_for_many_conversations() -> None:
    backend = ScriptedBackend([reply(f"there are {i + 3} boxes") for i in range(4)])
    sim = LLMSimulator(backend)
    turns = sim.respond([(task(i), waiting(i)) for i in range(4)], seeds=[7, 8, 9, 10])
    assert [t.text for t in turns] == [f"there are {i + 3} boxes" for i in range(4)]
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 4
    assert [r.params.seed for r in backend.batches[0]] == [7, 8, 9, 10]
    assert backend.batches[0][0].params.temperature == 1.0
    assert sim.stats.turns == 4 and sim.stats.reasks == 0


def test_prompt_carries_goal_kind_and_transcript_but_only_response_is_used() -> None:
    backend = ScriptedBackend([json.dumps({"current_answer": "none", "thought": "SECRET", "response": "3 boxes"})])
    turn = LLMSimulator(backend).respond([(task(), waiting())])[0]
    prompt = backend.batches[0][0].messages[-1]["content"]
    assert task().goal in prompt and "math problem" in prompt and "How many boxes are there?" in prompt
    assert turn.text == "3 boxes"
    assert "SECRET" not in (turn.text or "")
    assert turn.info["thought"] == "SECRET"


def test_hostile_outputs_are_reasked_in_one_batch_with_a_new_seed() -> None:
    backend = ScriptedBackend(
        [
            "",  # empty
            "I'm not sure what {you mean",  # garbage
            reply(5),  # a number where a string was expected
            json.dumps({"thought": "t", "response": "   "}),  # empty response
            reply("fine, 3 boxes"),  # good
            # round 2: only the four failures come back
            reply("3 boxes"),
            reply("4 boxes"),
            reply("5 boxes"),
            reply("6 boxes"),
        ]
    )
    sim = LLMSimulator(backend)
    turns = sim.respond([(task(i), waiting(i)) for i in range(5)], seeds=[1] * 5)
    assert [t.text for t in turns] == ["3 boxes", "4 boxes", "5 boxes", "6 boxes", "fine, 3 boxes"]
    assert [len(b) for b in backend.batches] == [5, 4]
    assert backend.batches[1][0].params.seed != backend.batches[0][0].params.seed
    assert sim.stats.parse_failures == 4
    assert sim.stats.reasks == 4
    assert sim.stats.gave_up == 0
    assert [t.info["attempts"] for t in turns] == [2, 2, 2, 2, 1]
    # The re-ask shows the model what was wrong.
    assert "must be a string" in backend.batches[1][2].messages[-1]["content"]


def test_string_5_in_a_string_field_is_fine_but_number_is_not() -> None:
    backend = ScriptedBackend([reply("5"), reply(5), reply("5")])
    sim = LLMSimulator(backend)
    turns = sim.respond([(task(0), waiting()), (task(1), waiting())])
    assert [t.text for t in turns] == ["5", "5"]
    assert sim.stats.parse_failures == 1


def test_json_in_a_fence_with_prose_is_accepted() -> None:
    backend = ScriptedBackend([f"Here you go:\n```json\n{reply('about 3 boxes')}\n```"])
    assert LLMSimulator(backend).respond([(task(), waiting())])[0].text == "about 3 boxes"


@pytest.mark.parametrize(
    "confused",
    [
        "Sure, here is the solution: multiply the boxes by the apples.",
        "As an AI language model, I can compute this for you.",
        "```python\nprint(3 * 4)\n```",
        "So the total is 12 apples.",
        "Tom has 3 boxes of apples and each box holds 4 apples. How many apples does Tom have in all?",
    ],
)
def test_role_confusion_is_rejected_and_resampled(confused: str) -> None:
    backend = ScriptedBackend([reply(confused), reply("3 boxes I think")])
    sim = LLMSimulator(backend)
    turn = sim.respond([(task(), waiting())])[0]
    assert turn.text == "3 boxes I think"
    assert sim.stats.role_confusions == 1
    assert sim.stats.reasks == 1
    assert len(backend.batches) == 2


def test_plausible_user_turns_are_not_role_confusion() -> None:
    t = task()
    for text in [
        "3 boxes",
        "Sure, I can tell you more: there are 3 boxes.",
        "Let me explain, I need the total for my shop.",
        "each box holds 4 apples",
        "I don't know, does it matter?",
    ]:
        assert role_confusion(t, text) is None, text


def test_short_goals_may_be_repeated_verbatim() -> None:
    qa = Task(id="q", kind="qa", goal="What is the capital of France?", answer="Paris")
    assert role_confusion(qa, "What is the capital of France?") is None


def test_goal_overlap_measures_copying() -> None:
    goal = "Write a function that sorts a list of numbers in descending order and removes duplicates"
    coverage, containment = goal_overlap(goal, goal)
    assert coverage == 1.0 and containment == 1.0
    coverage, _ = goal_overlap(goal, "sort my numbers please")
    assert coverage == 0.0


def test_termination_signal_ends_the_conversation() -> None:
    backend = ScriptedBackend([reply("Great, thanks! [[TERMINATE CHAT]]"), reply("[[TERMINATE CHAT]]")])
    turns = LLMSimulator(backend).respond([(task(0), waiting()), (task(1), waiting())])
    assert turns[0].done and turns[0].text == "Great, thanks!"
    assert turns[1].done and turns[1].text is None
    assert turns[0].info["reason"] == "terminate"


def test_all_reasks_failing_gives_up_with_an_explicit_failure() -> None:
    backend = ScriptedBackend(["garbage", reply("3 boxes"), "garbage", "garbage"])
    sim = LLMSimulator(backend, max_reasks=2)
    turns = sim.respond([(task(0), waiting()), (task(1), waiting())])
    failed, ok = turns
    assert failed.text is None and failed.done
    assert failed.info["failed"] is True
    assert "unparseable" in failed.info["error"]
    assert failed.info["attempts"] == 3
    assert ok.text == "3 boxes" and not ok.done
    assert sim.stats.gave_up == 1
    assert sim.stats.parse_failures == 3
    assert sim.stats.reasks == 2
    assert [len(b) for b in backend.batches] == [2, 1, 1]
    assert len({b[0].params.seed for b in backend.batches}) == 3


def test_backend_errors_are_reasked_and_counted_separately() -> None:
    backend = ScriptedBackend([Generation.failure("timeout"), reply("3 boxes")])
    sim = LLMSimulator(backend)
    assert sim.respond([(task(), waiting())])[0].text == "3 boxes"
    assert sim.stats.backend_errors == 1 and sim.stats.parse_failures == 0


def test_terminating_in_the_opening_is_rejected() -> None:
    backend = ScriptedBackend([reply("[[TERMINATE CHAT]]"), reply("help me with apples")])
    sim = LLMSimulator(backend)
    assert sim.respond([(task(opening=None), [])])[0].text == "help me with apples"
    assert sim.stats.parse_failures == 1


def test_zero_reasks_means_one_attempt() -> None:
    backend = ScriptedBackend(["nope"])
    sim = LLMSimulator(backend, max_reasks=0)
    assert sim.respond([(task(), waiting())])[0].info["failed"] is True
    assert len(backend.batches) == 1 and sim.stats.gave_up == 1


def test_turn_limit_stops_without_a_model_call() -> None:
    backend = ScriptedBackend([reply("3 boxes")])
    sim = LLMSimulator(backend, max_turns=1)
    at_limit, fresh = sim.respond([(task(0), waiting()), (task(1, opening=None), [])])
    assert at_limit.done and at_limit.text is None and at_limit.info["reason"] == "turn_limit"
    assert "error" not in at_limit.info  # a normal end, not a failure
    assert fresh.text == "3 boxes"
    assert [len(b) for b in backend.batches] == [1]


def test_seeds_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="2 seeds for 1 conversations"):
        LLMSimulator(ScriptedBackend([])).respond([(task(), waiting())], seeds=[1, 2])


def test_registry_builds_each_kind() -> None:
    assert isinstance(make_simulator("sharded", max_turns=3), ShardedSimulator)
    sim = make_simulator(
        "llm", backend=ScriptedBackend([]), max_turns=5, temperature=0.8, max_new_tokens=300, max_reasks=1
    )
    assert isinstance(sim, LLMSimulator) and sim.max_reasks == 1 and sim.max_turns == 5
    assert sim.params.temperature == 0.8 and sim.params.max_new_tokens == 300


def test_registry_errors_are_clear() -> None:
    with pytest.raises(CollabError, match="valid kinds: sharded, llm.*Did you mean 'sharded'"):
        make_simulator("shardd")
    with pytest.raises(CollabError, match="needs a backend"):
        make_simulator("llm")
    with pytest.raises(CollabError, match="unknown option.*max_turn.*valid options: max_turns, mode, give_up, recap, is_correct"):
        make_simulator("sharded", max_turn=3)
