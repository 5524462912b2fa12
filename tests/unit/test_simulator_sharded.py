"""The scripted Lost-in-Conversation user: every rule of its policy, determinism and statelessness."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from collab.chat import Conversation, message
from collab.metrics.dialogue_acts import is_question
from collab.seeding import stable_seed
from collab.simulators.sharded import DONT_KNOW, THANKS, ShardedSimulator, first_sentence, rank_facts
from collab.tasks.record import Task

TASK = Task(
    id="apples-1",
    kind="math",
    goal="Tom has 3 boxes of apples. Each box holds 4 apples. The apples are red. How many apples does Tom have?",
    opening="Tom has some boxes of apples. How many apples does he have?",
    facts=("He has 3 boxes.", "Each box holds 4 apples.", "The apples are red."),
    answer="12",
    needs_clarification=True,
)


def correct_if_12(task: Task, text: str) -> bool:
    return "12" in text


def sim(**options: object) -> ShardedSimulator:
    options.setdefault("is_correct", correct_if_12)
    return ShardedSimulator(**options)  # type: ignore[arg-type]


def convo(*pairs: str) -> Conversation:
    """Alternating user/assistant messages starting with the user."""
    return [message("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(pairs)]


def test_opening_is_the_task_opening() -> None:
    turn = sim().respond([(TASK, [])])[0]
    assert turn.text == TASK.opening
    assert not turn.done
    assert turn.info["reason"] == "opening"


def test_opening_falls_back_to_the_goals_first_sentence() -> None:
    task = TASK.model_copy(update={"opening": None})
    turn = sim().respond([(task, [])])[0]
    assert turn.text == "Tom has 3 boxes of apples."
    assert first_sentence("Write a sort. It must be stable.") == "Write a sort."


def test_question_reveals_exactly_one_fact() -> None:
    # The question touches two facts (boxes and apples per box); only one comes back.
    transcript = convo(TASK.opening or "", "How many boxes are there, and how many apples fit in each box?")
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.info["reason"] == "reveal"
    shown = [f for f in TASK.facts if f in (turn.text or "")]
    assert len(shown) == 1
    assert shown[0] == TASK.facts[turn.info["fact_index"]]


def test_most_relevant_fact_is_revealed_not_the_first() -> None:
    transcript = convo(TASK.opening or "", "What colour... sorry, are the apples red or green?")
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.info["fact_index"] == 2
    assert "The apples are red." in (turn.text or "")


def test_question_about_boxes_reveals_the_box_count() -> None:
    transcript = convo(TASK.opening or "", "How many boxes does Tom have?")
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.info["fact_index"] == 0


def test_ties_break_by_fact_order() -> None:
    facts = ("The width is 2 meters.", "The height is 2 meters.")
    best, score = rank_facts("How many meters?", facts, [0, 1])
    assert best == 0 and score > 0
    assert rank_facts("How many meters?", facts, [1])[0] == 1


def test_irrelevant_question_gets_dont_know() -> None:
    transcript = convo(TASK.opening or "", "Which city does Tom live in?")
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.info["reason"] == "dont_know"
    assert turn.text in DONT_KNOW
    assert turn.info["fact_index"] is None
    assert not turn.done


def test_revealed_facts_are_read_from_the_transcript_and_not_repeated() -> None:
    # The user already said fact 1; asking about apples per box again must not reveal it twice.
    transcript = convo(
        TASK.opening or "",
        "How many apples are in each box?",
        "Each box holds 4 apples.",
        "How many apples are in each box exactly?",
    )
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.info["fact_index"] != 1
    assert 1 in turn.info["revealed"]


def test_correct_attempt_ends_with_thanks() -> None:
    transcript = convo(TASK.opening or "", "Tom has 3 x 4 = 12 apples.")
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.done
    assert turn.info["reason"] == "answer_correct"
    assert turn.text in THANKS


def test_wrong_attempt_reveals_the_next_fact() -> None:
    transcript = convo(TASK.opening or "", "Tom has 10 apples.")
    turn = sim().respond([(TASK, transcript)])[0]
    assert not turn.done
    assert turn.info["reason"] == "reveal"
    assert turn.info["fact_index"] == 0
    assert TASK.facts[0] in (turn.text or "")


def test_wrong_attempt_with_facts_exhausted_ends() -> None:
    transcript = convo(
        "Tom has some boxes. He has 3 boxes. Each box holds 4 apples. The apples are red.",
        "Tom has 10 apples.",
    )
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.done
    assert turn.text is None
    assert turn.info["reason"] == "exhausted"


def test_non_answer_non_question_is_nudged_with_the_next_fact() -> None:
    transcript = convo(TASK.opening or "", "Let me think about this problem carefully.")
    turn = sim().respond([(TASK, transcript)])[0]
    assert turn.info["reason"] == "reveal"
    assert turn.info["fact_index"] == 0


def test_nudge_without_facts_asks_for_the_answer_without_a_question() -> None:
    task = TASK.model_copy(update={"facts": ()})
    turn = sim().respond([(task, convo("Tom has 3 boxes of 4 apples.", "Let me think."))])[0]
    assert turn.info["reason"] == "nudge"
    assert "?" not in (turn.text or "")


def test_turn_limit_ends_the_conversation() -> None:
    transcript = convo(TASK.opening or "", "Which city?", "I don't know.", "Which street?")
    turn = sim(max_turns=2).respond([(TASK, transcript)])[0]
    assert turn.done
    assert turn.text is None
    assert turn.info["reason"] == "turn_limit"


def test_correct_answer_at_the_turn_limit_still_counts_as_correct() -> None:
    transcript = convo(TASK.opening or "", "Which city?", "I don't know.", "The answer is 12.")
    turn = sim(max_turns=2).respond([(TASK, transcript)])[0]
    assert turn.info["reason"] == "answer_correct"


def test_correctness_is_only_checked_on_answer_attempts() -> None:
    checked: list[str] = []

    def spy(task: Task, text: str) -> bool:
        checked.append(text)
        return False

    s = sim(is_correct=spy)
    s.respond([(TASK, convo(TASK.opening or "", "How many boxes?"))])
    s.respond([(TASK, convo(TASK.opening or "", "The answer is 7."))])
    assert checked == ["The answer is 7."]


def test_crashing_correctness_check_is_counted_not_treated_as_correct() -> None:
    def broken(task: Task, text: str) -> bool:
        raise RuntimeError("sandbox died")

    s = sim(is_correct=broken)
    turn = s.respond([(TASK, convo(TASK.opening or "", "The answer is 12."))])[0]
    assert not turn.done
    assert s.stats.correctness_errors == 1
    assert "sandbox died" in turn.info["correctness_error"]


def test_the_user_never_asks_questions() -> None:
    replies = [
        "How many boxes?",
        "Which city?",
        "Tom has 10 apples.",
        "Let me think.",
        "What colour are the apples?",
        "How many per box?",
        "The answer is 12.",
    ]
    s = sim(max_turns=20)
    for seed in range(5):
        transcript: Conversation = []
        for reply in replies:
            turn = s.respond([(TASK, transcript)], seeds=[seed])[0]
            if turn.text is not None:
                assert "?" not in turn.text or turn.info["reason"] == "opening"
                if turn.info["reason"] != "opening":
                    assert not is_question(turn.text)
                transcript.append(message("user", turn.text))
            if turn.done:
                break
            transcript.append(message("assistant", reply))


def test_batch_answers_each_conversation_in_order() -> None:
    batch = [
        (TASK, []),
        (TASK, convo(TASK.opening or "", "Which city?")),
        (TASK, convo(TASK.opening or "", "The answer is 12.")),
    ]
    reasons = [t.info["reason"] for t in sim().respond(batch)]
    assert reasons == ["opening", "dont_know", "answer_correct"]


def test_same_seed_gives_identical_turns_across_calls_and_instances() -> None:
    transcript = convo(TASK.opening or "", "Which city?")
    a = [sim().respond([(TASK, transcript)], seeds=[s])[0].text for s in range(10)]
    b = [sim().respond([(TASK, transcript)], seeds=[s])[0].text for s in range(10)]
    assert a == b


def test_different_seeds_vary_the_wording() -> None:
    transcript = convo(TASK.opening or "", "Which city?")
    texts = {sim().respond([(TASK, transcript)], seeds=[s])[0].text for s in range(20)}
    assert len(texts) >= 3


def test_wording_does_not_depend_on_python_hash_salt() -> None:
    code = "from collab.seeding import stable_seed; print(stable_seed(3, 'apples-1', 2))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == stable_seed(3, "apples-1", 2)


def test_transcript_ending_with_user_is_rejected() -> None:
    with pytest.raises(ValueError, match="must end with an assistant turn"):
        sim().respond([(TASK, convo("hi"))])


def test_system_messages_are_ignored() -> None:
    transcript = [message("system", "You are helpful."), *convo(TASK.opening or "", "How many boxes?")]
    assert sim().respond([(TASK, transcript)])[0].info["fact_index"] == 0


def test_recorded_reveals_feed_the_behaviour_metrics() -> None:
    from collab.metrics.behaviour import behaviour

    s = sim()
    transcript: Conversation = []
    record: list[dict[str, object]] = []
    for reply in ["How many boxes?", "How many apples per box?", "What colour are the apples?", "It is 12."]:
        turn = s.respond([(TASK, transcript)])[0]
        assert turn.text is not None
        transcript.append(message("user", turn.text))
        record.append(turn.info)
        transcript.append(message("assistant", reply))
    final = s.respond([(TASK, transcript)])[0]
    assert final.info["reason"] == "answer_correct"
    assert record[-1]["revealed"] == [0, 1, 2]
    b = behaviour(TASK, transcript, revealed_facts_per_turn=record)
    assert (b.asked, b.premature_answer, b.over_ask, b.turns) == (1.0, 0.0, 0.0, 4.0)


def test_each_item_uses_its_own_seed() -> None:
    transcript = convo(TASK.opening or "", "Which city?")
    together = [t.text for t in sim().respond([(TASK, transcript)] * 6, seeds=list(range(6)))]
    alone = [sim().respond([(TASK, transcript)], seeds=[s])[0].text for s in range(6)]
    assert together == alone
    with pytest.raises(ValueError, match="1 seeds for 2 conversations"):
        sim().respond([(TASK, transcript)] * 2, seeds=[0])


# --- withhold mode: the training user, for whom a guess costs something ------------------------------------------


def test_withhold_mode_rejects_a_wrong_answer_without_volunteering_a_fact() -> None:
    [turn] = sim(mode="withhold").respond([(TASK, convo(TASK.opening or "", "Tom has 7 apples."))], seeds=[3])
    assert turn.info["reason"] == "rejected" and turn.info["fact_index"] is None and not turn.done
    assert not any(fact in (turn.text or "") for fact in TASK.facts)


def test_withhold_mode_gives_up_after_a_wrong_answer_at_the_set_rate() -> None:
    user = sim(mode="withhold", give_up=0.5)
    turns = user.respond([(TASK, convo(TASK.opening or "", "Tom has 7 apples."))] * 400, seeds=list(range(400)))
    gave_up = sum(t.info["reason"] == "gave_up" for t in turns)
    assert all(t.done and t.text is None for t in turns if t.info["reason"] == "gave_up")
    assert 160 <= gave_up <= 240  # 200 expected; binomial sd 10


def test_withhold_mode_still_answers_a_relevant_question_and_nudges_without_facts() -> None:
    user = sim(mode="withhold")
    [asked] = user.respond([(TASK, convo(TASK.opening or "", "How many boxes are there?"))])
    assert asked.info["reason"] == "reveal" and asked.info["fact_index"] == 0
    [other] = user.respond([(TASK, convo(TASK.opening or "", "Let me think about this."))])
    assert other.info["reason"] == "nudge" and other.info["fact_index"] is None


def test_recap_restates_the_whole_request_once_the_last_fact_is_out() -> None:
    one_fact = TASK.model_copy(update={"facts": ("Each box holds 4 apples.",),
                                       "opening": "Tom has 3 boxes of apples. How many apples does he have?"})
    [turn] = sim(mode="withhold", recap=True).respond(
        [(one_fact, convo(one_fact.opening or "", "How many apples are in each box?"))])
    assert "Each box holds 4 apples." in (turn.text or "") and one_fact.goal in (turn.text or "")
    [early] = sim(recap=True).respond([(TASK, convo(TASK.opening or "", "How many boxes are there?"))])
    assert TASK.goal not in (early.text or "")  # two facts still withheld: no recap yet


def test_unknown_mode_and_bad_give_up_are_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        ShardedSimulator(mode="stingy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        ShardedSimulator(give_up=1.5)
