"""First-turn decision scores: one forward per task, ranked against needs_clarification, summarised by group."""

from __future__ import annotations

import pytest
import torch

from collab.errors import CollabError
from collab.evaluate.decision import (
    DecisionScore,
    ask_probability,
    auc,
    decision_scores,
    first_token,
    summarize,
)
from collab.models import load_model, load_tokenizer, tiny_model_dir
from collab.tasks.registry import load_task_set


@pytest.fixture(scope="module")
def tiny() -> tuple:
    path = str(tiny_model_dir())
    return load_model(path, device="cpu"), load_tokenizer(path)


def _score(needs: bool, score: float, group: str = "g") -> DecisionScore:
    return DecisionScore("t", needs, group, score)


def test_the_score_is_the_log_probability_gap_of_the_two_first_tokens(tiny: tuple) -> None:
    model, tokenizer = tiny
    tasks = load_task_set("clarify-math", split="test", limit=2)
    scores = decision_scores(model, tokenizer, tasks)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": tasks[1].opening}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    expected = logp[first_token(tokenizer, "Could you tell me")] - logp[first_token(tokenizer, "The answer is")]
    assert scores[1].score == pytest.approx(float(expected), abs=1e-5)
    assert [(s.task_id, s.needs_clarification, s.group) for s in scores] == [
        (tasks[0].id, True, "1/underspecified"), (tasks[1].id, False, "1/complete")]


def test_openings_that_share_their_first_token_are_refused(tiny: tuple) -> None:
    model, tokenizer = tiny
    tasks = load_task_set("clarify-math", split="test", limit=1)
    with pytest.raises(CollabError, match="start with the same token"):
        decision_scores(model, tokenizer, tasks, ask_opening="The question is", answer_opening="The answer is")


def test_auc_counts_correctly_ordered_pairs_with_ties_as_half() -> None:
    assert auc([_score(True, 2.0), _score(True, 1.0), _score(False, 0.0)]) == 1.0
    assert auc([_score(True, 0.0), _score(False, 1.0)]) == 0.0
    assert auc([_score(True, 1.0), _score(True, -1.0), _score(False, 0.0), _score(False, 1.0)]) == 0.375
    assert auc([_score(True, 1.0)]) is None


def test_ask_probability_is_a_temperature_scaled_sigmoid_and_greedy_a_threshold() -> None:
    assert ask_probability(0.0, 0.7) == 0.5
    assert ask_probability(0.7, 0.7) == pytest.approx(0.7311, abs=1e-4)
    assert (ask_probability(0.1, 0.0), ask_probability(-0.1, 0.0)) == (1.0, 0.0)


def test_summary_gives_expected_rates_per_variant_and_mean_score_per_group() -> None:
    scores = [_score(True, 10.0, "1/u"), _score(True, -10.0, "1/u"), _score(False, -10.0, "2/c")]
    summary = summarize(scores, temperature=0.0)
    assert (summary.auc, summary.ask_rate, summary.over_ask_rate) == (0.75, 0.5, 0.0)
    assert summary.mean_by_group == {"1/u": 0.0, "2/c": -10.0}


def test_the_command_prints_a_summary_and_the_group_means_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    from collab.evaluate.decision import main

    main([str(tiny_model_dir()), "--limit", "4", "--temperature", "0.7"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tiny_model_dir()}: AUC ") and "expected at T=0.7: ask " in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["1/complete", "1/underspecified"]
