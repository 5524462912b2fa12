"""Turning data-engine records into SFT rows and DPO pairs."""

from __future__ import annotations

from typing import Any

from collab.data.convert import balance_by_action, build_datasets, dpo_rows, sft_rows

QUESTION = "Could you tell me how many are in each box?"
ANSWER = "The answer is 12."


def candidate(text: str, mr: float | None, strategy: str = "sample", truncated: bool = False) -> dict[str, Any]:
    return {"text": text, "mr": mr, "strategy": strategy, "truncated": truncated}


def record(conv_id: str, *candidates: dict[str, Any], turn: int = 0) -> dict[str, Any]:
    scored = [i for i, c in enumerate(candidates) if c["mr"] is not None]
    best = max(scored, key=lambda i: candidates[i]["mr"]) if scored else None
    return {"conv_id": conv_id, "turn": turn, "history": [{"role": "user", "content": "Tom has 3 boxes."}],
            "candidates": list(candidates), "best": best}


def test_best_worst_makes_one_pair_from_the_extremes() -> None:
    rec = record("c", candidate(QUESTION, 0.9, "ask"), candidate(ANSWER, 0.1, "answer"), candidate("Hm.", 0.5))
    (row,) = dpo_rows(rec, None, min_gap=0.05, pairs="best_worst")
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (QUESTION, ANSWER)
    assert row["gap"] == 0.9 - 0.1 and row["chosen_strategy"] == "ask"


def test_across_acts_pairs_the_best_question_with_the_worst_message_not_with_a_worse_question() -> None:
    # An underspecified request: the question that obtained the detail wins, the question that obtained nothing
    # is the worst; best_worst would compare two questions and never show asking beat answering.
    rec = record("c", candidate(QUESTION, 0.96, "ask"), candidate("Could you tell me where?", -0.54, "ask"),
                 candidate(ANSWER, -0.02, "answer"), candidate("The answer is 9.", 0.3, "answer"))
    (worst_pair,) = dpo_rows(rec, None, min_gap=0.05, pairs="best_worst")
    assert worst_pair["rejected"][0]["content"] == "Could you tell me where?"
    (row,) = dpo_rows(rec, None, min_gap=0.05, pairs="across_acts")
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (QUESTION, ANSWER)
    assert row["gap"] == 0.96 - -0.02


def test_across_acts_pairs_the_best_message_with_the_worst_question_and_falls_back_when_all_act_alike() -> None:
    # The worst reply overall is another message; the pair still rejects the worst question.
    complete = record("c", candidate(ANSWER, 0.95, "answer"), candidate(QUESTION, 0.4, "ask"),
                      candidate("Could you tell me where?", -0.5, "ask"), candidate("The answer is 9.", -0.9))
    (worst_pair,) = dpo_rows(complete, None, min_gap=0.05, pairs="best_worst")
    assert worst_pair["rejected"][0]["content"] == "The answer is 9."
    (row,) = dpo_rows(complete, None, min_gap=0.05, pairs="across_acts")
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (ANSWER, "Could you tell me where?")
    # A question and a message tied for best make no pair: there is nothing to prefer.
    tied = record("c", candidate(ANSWER, 0.9, "answer"), candidate(QUESTION, 0.9, "ask"))
    assert dpo_rows(tied, None, min_gap=0.05, pairs="across_acts") == []
    alike = record("c", candidate(ANSWER, 0.95, "answer"), candidate("The answer is 9.", 0.0, "answer"))
    (row,) = dpo_rows(alike, None, min_gap=0.05, pairs="across_acts")
    assert row["rejected"][0]["content"] == "The answer is 9."


def test_all_pairs_keeps_every_comparison_above_the_gap_and_never_a_tie() -> None:
    rec = record("c", candidate(QUESTION, 0.9), candidate(ANSWER, 0.1), candidate("Hm.", 0.1), candidate("Ok", 0.88))
    rows = dpo_rows(rec, None, min_gap=0.05, pairs="all")
    pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows}
    # 0.9 vs 0.88 is under the gap; the two 0.1 candidates tie.
    assert pairs == {(QUESTION, ANSWER), (QUESTION, "Hm."), ("Ok", ANSWER), ("Ok", "Hm.")}


def test_failed_candidates_and_identical_texts_make_no_pair() -> None:
    assert dpo_rows(record("c", candidate(QUESTION, 0.9), candidate(ANSWER, None)), None, min_gap=0,
                    pairs="all") == []
    assert dpo_rows(record("c", candidate(ANSWER, 0.9), candidate(ANSWER, 0.1)), None, min_gap=0, pairs="all") == []


def test_a_chosen_reply_below_min_chosen_mr_makes_no_pair_however_large_the_gap() -> None:
    # A needless question (MR -0.02) beats an answer cut off at the token limit (the -1 penalty) by 0.98.
    needless = record("c", candidate(QUESTION, -0.02, "ask"), candidate(ANSWER, -1.0, "answer", truncated=True))
    assert len(dpo_rows(needless, None, min_gap=0.05, pairs="best_worst")) == 1
    assert dpo_rows(needless, None, min_gap=0.05, pairs="best_worst", min_chosen_mr=0.2) == []
    good = record("c", candidate(QUESTION, 0.45, "ask"), candidate(ANSWER, -1.0, "answer", truncated=True))
    assert len(dpo_rows(good, None, min_gap=0.05, pairs="best_worst", min_chosen_mr=0.2)) == 1


def test_a_truncated_best_reply_is_no_sft_demonstration() -> None:
    assert sft_rows(record("c", candidate(QUESTION, 0.9, truncated=True), candidate(ANSWER, 0.1)), None) == []
    (row,) = sft_rows(record("c", candidate(QUESTION, 0.9), candidate(ANSWER, 0.1)), "Be brief.")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]


def pair(chosen: str, gap: float) -> dict[str, Any]:
    return {"chosen": [{"role": "assistant", "content": chosen}], "gap": gap}


def test_balancing_keeps_the_largest_gaps_of_the_larger_action_group_in_order() -> None:
    rows = [pair(QUESTION, 0.5), pair(ANSWER, 0.2), pair(QUESTION, 0.9), pair(QUESTION, 0.1), pair(ANSWER, 0.3)]
    kept = balance_by_action(rows)
    assert [(r["chosen"][0]["content"] == QUESTION, r["gap"]) for r in kept] == [
        (True, 0.5), (False, 0.2), (True, 0.9), (False, 0.3)]


def test_balancing_a_one_sided_set_leaves_nothing_to_learn_a_habit_from() -> None:
    assert balance_by_action([pair(QUESTION, 0.5), pair(QUESTION, 0.4)]) == []
    assert balance_by_action([]) == []


def test_build_datasets_balances_each_split_and_reports_the_action_shares() -> None:
    records = [record(f"u{i}", candidate(QUESTION, 0.9, "ask"), candidate(ANSWER, 0.0, "answer")) for i in range(3)]
    records.append(record("c0", candidate(ANSWER, 1.0, "answer"), candidate(QUESTION, 0.0, "ask")))
    _, dpo, stats = build_datasets(records, min_gap=0.05, pairs="best_worst", eval_fraction=0.0, seed=0)
    assert stats["pairs"] == {"train": 4, "eval": 0} and stats["chosen_ask_share"] == 0.75
    _, dpo, stats = build_datasets(records, min_gap=0.05, pairs="best_worst", eval_fraction=0.0, seed=0,
                                   balance_actions=True)
    assert stats["pairs"] == {"train": 2, "eval": 0}
    assert stats["chosen_ask_share"] == 0.5 and stats["rejected_ask_share"] == 0.5
    assert sorted(dpo["train"]["conv_id"]) == ["c0", "u0"]
