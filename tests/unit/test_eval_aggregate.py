"""Aggregation of constructed conversation rows: every metric, failures, runs, comparisons."""

from __future__ import annotations

from typing import Any

import pytest

from collab.evaluate.aggregate import aggregate, metric_specs


def row(
    model: str,
    task: str,
    *,
    run: int = 0,
    needs: bool = False,
    facts: int = 0,
    failed: str | None = None,
    **scores: Any,
) -> dict[str, Any]:
    base = {"task_score": 1.0, "asked": 0.0, "premature_answer": 0.0, "over_ask": 0.0, "turns": 1.0,
            "first_action": "answer", "tokens": 10}
    base.update(scores)
    return {
        "model": model, "task_id": task, "run": run, "needs_clarification": needs, "n_facts": facts,
        "failed": failed, "messages": [], "scores": {} if failed else base, "errors": {},
    }


def results_for(rows: list[dict[str, Any]], models: tuple[str, ...] = ("m",), **kwargs: Any) -> dict[str, Any]:
    return aggregate(rows, list(models), resamples=200, seed=0, **kwargs)


# Two underspecified tasks (u1 asked, u2 answered prematurely) and two complete ones (c1 asked needlessly).
MIXED = [
    row("m", "u1", needs=True, facts=1, asked=1.0, first_action="ask", turns=2.0, tokens=30, task_score=1.0),
    row("m", "u2", needs=True, facts=1, premature_answer=1.0, task_score=0.0, tokens=20),
    row("m", "c1", asked=1.0, over_ask=1.0, first_action="ask", turns=2.0, tokens=40, task_score=1.0),
    row("m", "c2", first_action="answer", tokens=10, task_score=0.0),
]


def test_every_base_metric_on_constructed_conversations() -> None:
    m = results_for(MIXED)["models"]["m"]
    assert m["task_score"]["mean"] == pytest.approx(0.5) and m["task_score"]["n"] == 4
    assert m["ask_rate"]["mean"] == pytest.approx(0.5) and m["ask_rate"]["n"] == 2
    assert m["over_ask_rate"]["mean"] == pytest.approx(0.5) and m["over_ask_rate"]["n"] == 2
    # first actions: u1 ask (right), u2 answer (wrong), c1 ask (wrong), c2 answer (right)
    assert m["action_accuracy"]["mean"] == pytest.approx(0.5)
    assert m["action_macro_f1"]["mean"] == pytest.approx(0.5)
    assert m["premature_answer_rate"]["mean"] == pytest.approx(0.5) and m["premature_answer_rate"]["n"] == 2
    assert m["turns"]["mean"] == pytest.approx(1.5)
    assert m["tokens"]["mean"] == pytest.approx(25.0)
    assert "mr" not in m and "task_score_aptitude" not in m


def test_estimates_have_exactly_the_documented_fields() -> None:
    results = results_for(MIXED, models=("m", "n"))
    assert set(results) == {"models", "comparisons", "meta"}
    for est in results["models"]["m"].values():
        assert set(est) == {"mean", "ci_low", "ci_high", "n"}
    for diff in results["comparisons"]["n vs m"].values():
        assert set(diff) == {"diff", "ci_low", "ci_high"}


def test_ask_and_answer_first_turn_counts_as_asking() -> None:
    rows = [row("m", "u1", needs=True, asked=1.0, first_action="ask_and_answer"),
            row("m", "c1", first_action="other")]
    m = results_for(rows)["models"]["m"]
    assert m["action_accuracy"]["mean"] == 1.0
    assert m["action_macro_f1"]["mean"] == 1.0


def test_no_tasks_needing_clarification_gives_ask_rate_none_with_n_zero() -> None:
    m = results_for([row("m", "c1"), row("m", "c2")])["models"]["m"]
    assert m["ask_rate"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    assert m["premature_answer_rate"]["n"] == 0
    assert m["over_ask_rate"]["mean"] == 0.0


def test_failed_conversations_are_excluded_and_counted_never_zero() -> None:
    rows = [row("m", "t1", task_score=1.0), row("m", "t2", failed="policy: HTTP 500: boom"),
            row("m", "t3", failed="simulator: unparseable")]
    results = results_for(rows)
    m = results["models"]["m"]
    assert m["task_score"]["mean"] == 1.0 and m["task_score"]["n"] == 1
    failures = results["meta"]["failures"]["m"]
    assert failures["conversations_failed"] == 2 and failures["conversations_total"] == 3
    assert failures["reasons"] == {"policy": 1, "simulator": 1}


def test_failed_metric_is_excluded_from_that_metric_only() -> None:
    rows = [row("m", "t1", task_score=None), row("m", "t2", task_score=0.0, tokens=30)]
    results = results_for(rows)
    m = results["models"]["m"]
    assert m["task_score"]["mean"] == 0.0 and m["task_score"]["n"] == 1
    assert m["tokens"]["n"] == 2 and m["tokens"]["mean"] == 20.0
    assert results["meta"]["failures"]["m"]["metric_failures"] == {"task_score": 1, "task_score_complete": 1}


def test_runs_are_averaged_within_a_task_before_averaging_tasks() -> None:
    rows = [row("m", "t1", run=r, task_score=s) for r, s in enumerate([1.0, 0.0, 0.0, 0.0])]
    rows.append(row("m", "t2", task_score=1.0))
    m = results_for(rows, runs=4)["models"]["m"]
    assert m["task_score"]["mean"] == pytest.approx((0.25 + 1.0) / 2)
    assert m["task_score"]["n"] == 2


def test_aptitude_and_unreliability_over_runs() -> None:
    scores = {"t1": [0.0, 0.0, 1.0, 1.0, 1.0], "t2": [1.0, 1.0, 1.0, 1.0, 1.0], "t3": [0.5]}
    rows = [row("m", t, run=r, task_score=s) for t, values in scores.items() for r, s in enumerate(values)]
    m = results_for(rows, runs=5)["models"]["m"]
    # np.percentile([0,0,1,1,1], 90) = 1, 10th = 0; t2 constant; t3 has one run only and is left out
    assert m["task_score_aptitude"]["mean"] == pytest.approx(1.0) and m["task_score_aptitude"]["n"] == 2
    assert m["task_score_unreliability"]["mean"] == pytest.approx(0.5) and m["task_score_unreliability"]["n"] == 2


def test_mr_is_reported_only_when_a_reward_is_configured() -> None:
    rows = [row("m", "t1", mr=0.8), row("m", "t2", mr=None)]
    assert "mr" not in results_for(rows)["models"]["m"]
    m = results_for(rows, with_mr=True, runs=2)["models"]["m"]
    assert m["mr"]["mean"] == 0.8 and m["mr"]["n"] == 1
    assert "mr_aptitude" in m and "mr_unreliability" in m
    assert [s.name for s in metric_specs(runs=1, with_mr=True)][:2] == ["task_score", "mr"]


def test_comparison_is_paired_by_shared_tasks_and_is_first_minus_second() -> None:
    a = [row("a", f"t{i}", task_score=0.0) for i in range(6)]
    b = [row("b", f"t{i}", task_score=1.0) for i in range(5)]  # t5 missing for b: not paired
    results = results_for(a + b, models=("a", "b"))
    diff = results["comparisons"]["b vs a"]["task_score"]
    assert diff == {"diff": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert list(results["comparisons"]) == ["b vs a"]


def test_comparison_with_no_shared_tasks_is_none() -> None:
    rows = [row("a", "u1", needs=True, asked=1.0), row("b", "c1")]
    diff = results_for(rows, models=("a", "b"))["comparisons"]["b vs a"]["ask_rate"]
    assert diff == {"diff": None, "ci_low": None, "ci_high": None}


def test_rows_of_other_models_are_ignored() -> None:
    rows = [row("m", "t1", task_score=1.0), row("other", "t1", task_score=0.0)]
    results = results_for(rows)
    assert list(results["models"]) == ["m"]
    assert results["models"]["m"]["task_score"]["mean"] == 1.0
