"""`collab plan`: request and token counts, costs and steps computed from a recipe, without running anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collab.cli import main
from collab.config import validate_recipe
from collab.errors import CollabError
from collab.plan import TaskCounts, Throughput, TokenAssumptions, plan_recipe
from collab.plan.counts import MRSettings, candidate_request, positions, rollout
from collab.plan.planner import RecipePlan, StagePlan

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "recipes" / "llama-3.1-8b-instruct" / "math-hard.yaml"
SIMPLE = TokenAssumptions(user_turn_tokens=10, assistant_turn_tokens=20, system_prompt_tokens=5,
                          simulator_prompt_tokens=100, simulator_output_tokens=7, judge_prompt_tokens=50,
                          judge_output_tokens=3, mean_turns=2, rollout_fill=1.0, pair_yield=0.5)

GPT4O_MINI = {"kind": "openai", "model": "gpt-4o-mini", "price_per_million": [0.15, 0.60], "concurrency": 10}
GPT4O = {"kind": "openai", "model": "gpt-4o", "price_per_million": [2.5, 10.0], "concurrency": 10}


def recipe(stages: list[dict[str, Any]], **sections: Any) -> Any:
    raw = {"name": "t", "model": {"name": "tiny-random-smollm2"}, "tasks": {"name": "clarify-math", "limit": 10},
           "simulator": {"kind": "llm", "max_turns": 7, "backend": GPT4O_MINI},
           "judge": {"backend": GPT4O},
           "reward": {"window": 2, "samples": 3, "interactivity": "judge", "policy_max_new_tokens": 256},
           "stages": stages, **sections}
    return validate_recipe(raw)


DATA = {"kind": "data", "candidates": 4, "max_turns": 3, "max_new_tokens": 256, "batch_conversations": 4,
        "eval_fraction": 0.0}


def only(plan: RecipePlan, label: str) -> StagePlan:
    return next(s for s in plan.stages if s.label == label)


def test_data_stage_requests_follow_candidates_rollouts_and_judge() -> None:
    plan = only(plan_recipe(recipe([DATA]), tokens=SIMPLE), "data").bound.counts

    # per conversation: 3 turns x (K=4 candidates + K*S=12 rollouts x w=2 policy turns)
    assert plan.policy.requests == 10 * 3 * (4 + 4 * 3 * 2) == 840
    assert plan.sampled == 10 * 3 * 4
    # the opening, then w=2 user turns per rollout
    assert plan.simulator.requests == 10 * (1 + 3 * 4 * 3 * 2) == 730
    assert plan.judge.requests == 10 * 3 * 4 * 3 == 360


def test_batched_calls_follow_engine_steps_per_batch_of_conversations() -> None:
    counts = only(plan_recipe(recipe([DATA]), tokens=SIMPLE), "data").bound.counts

    batches, turns = 3, 3  # 10 conversations in batches of 4
    assert counts.policy.calls == batches * turns * (1 + 2)  # a candidate call and w rollout steps per turn
    assert counts.simulator.calls == batches + batches * turns * 2
    assert counts.judge.calls == batches * turns


def test_expected_column_uses_mean_turns_capped_by_the_limit() -> None:
    plans = [only(plan_recipe(recipe([DATA]), tokens=TokenAssumptions(mean_turns=m)), "data") for m in (1.5, 9)]

    assert plans[0].expected.counts.turns == 1.5
    assert plans[0].expected.counts.policy.requests == pytest.approx(10 * 1.5 * 28)
    assert plans[1].expected.counts.turns == 3  # never above the stage's max_turns
    assert plans[1].expected.counts.policy.requests == plans[1].bound.counts.policy.requests


def test_turn_limit_is_the_smaller_of_stage_and_simulator_limits() -> None:
    counts = only(plan_recipe(recipe([{**DATA, "max_turns": 5}], simulator={"kind": "sharded", "max_turns": 2}),
                              tokens=SIMPLE), "data").bound.counts

    assert counts.turns == 2


def test_input_tokens_grow_with_the_history() -> None:
    # turn t: system + (t+1) user turns + t assistant turns
    assert candidate_request(SIMPLE, 0, 256).input_tokens == 5 + 10
    assert candidate_request(SIMPLE, 2, 256).input_tokens == 5 + 3 * 10 + 2 * 20
    # an assistant turn is capped by the stage's max_new_tokens
    assert candidate_request(SIMPLE, 2, 8).input_tokens == 5 + 3 * 10 + 2 * 8
    assert candidate_request(SIMPLE, 2, 8).output_tokens == 8


def test_one_rollout_counts_simulator_policy_and_judge_tokens_per_future_turn() -> None:
    mr = MRSettings(window=2, samples=3, judged=True, rollout_max_new_tokens=256)
    policy, simulator, judge = rollout(SIMPLE, 0, mr, 1.0, True, 256)

    # after the candidate at t=0: 1 user + 1 assistant turn; the simulator sees 1+j of each, the policy one more user
    assert simulator.input_tokens == (100 + 1 * 30) + (100 + 2 * 30)
    assert policy.input_tokens == (5 + 2 * 10 + 1 * 20) + (5 + 3 * 10 + 2 * 20)
    assert (policy.output_tokens, simulator.output_tokens) == (2 * 20, 2 * 7)
    assert judge.input_tokens == 50 + 3 * 30 and judge.requests == 1


def test_fractional_last_turn_counts_with_its_weight() -> None:
    assert positions(2.5) == [(0, 1.0), (1, 1.0), (2, 0.5)]
    assert positions(3) == [(0, 1.0), (1, 1.0), (2, 1.0)]


def test_default_assumptions_match_the_paper_cost_of_one_rollout() -> None:
    # CollabLLM: one forward rollout at w=2 is about 2.5k policy + 4.5k simulator input tokens, and an MR needs
    # 15-21 LLM calls; a generated conversation 150-300.
    a = TokenAssumptions()
    mr = MRSettings(window=2, samples=3, judged=True, rollout_max_new_tokens=1024)
    places = positions(a.mean_turns)
    mean = [rollout(a, t, mr, 1.0, True, 1024) for t, _ in places]
    policy_in = sum(p.input_tokens for p, _, _ in mean) / len(mean)
    simulator_in = sum(s.input_tokens for _, s, _ in mean) / len(mean)
    assert policy_in == pytest.approx(2500, rel=0.15)
    assert simulator_in == pytest.approx(4500, rel=0.15)
    calls_per_mr = sum(x.requests for x in mean[0]) * mr.samples
    assert 15 <= calls_per_mr <= 21

    data = only(plan_recipe(recipe([{**DATA, "candidates": 3, "max_turns": 7}])), "data").expected.counts
    per_conversation = (data.policy.requests + data.simulator.requests + data.judge.requests) / data.conversations
    assert 150 <= per_conversation <= 300


def test_api_cost_uses_each_backends_price_per_million() -> None:
    stage = only(plan_recipe(recipe([DATA]), tokens=SIMPLE), "data").bound
    c = stage.counts

    assert stage.api_usd["simulator"] == pytest.approx((c.simulator.input_tokens * 0.15 +
                                                        c.simulator.output_tokens * 0.60) / 1e6)
    assert stage.api_usd["judge"] == pytest.approx((c.judge.input_tokens * 2.5 + c.judge.output_tokens * 10) / 1e6)
    assert "policy" not in stage.api_usd  # the hf policy runs locally: GPU-hours, not dollars
    assert stage.total_usd == pytest.approx(stage.api_usd["simulator"] + stage.api_usd["judge"])


def test_a_backend_without_price_makes_the_cost_unknown_and_says_so() -> None:
    unpriced = {**GPT4O, "price_per_million": None}
    plan = only(plan_recipe(recipe([DATA], judge={"backend": unpriced})), "data")

    assert plan.bound.api_usd["judge"] is None and plan.bound.total_usd is None
    assert any("judge" in n and "price_per_million" in n for n in plan.notes)


def test_openai_policy_is_priced_and_local_policy_costs_gpu_hours() -> None:
    local = only(plan_recipe(recipe([DATA]), tokens=SIMPLE), "data").bound
    api = only(plan_recipe(recipe([DATA], policy={**GPT4O_MINI, "model": "p"}), tokens=SIMPLE), "data").bound
    c = local.counts.policy
    throughput = Throughput()

    assert local.generation_gpu_hours == pytest.approx(
        (c.input_tokens / throughput.prefill_tokens_per_s + c.output_tokens / throughput.policy_tokens_per_s) / 3600)
    assert api.generation_gpu_hours == 0
    assert api.api_usd["policy"] == pytest.approx((c.input_tokens * 0.15 + c.output_tokens * 0.6) / 1e6)


def test_scripted_simulator_and_rule_based_interactivity_cost_nothing() -> None:
    r = recipe([DATA], simulator={"kind": "sharded", "max_turns": 7}, reward={"interactivity": "elicitation"})
    stage = only(plan_recipe(r), "data").bound

    assert stage.counts.simulator.requests > 0 and stage.counts.simulator.input_tokens == 0
    assert stage.counts.judge.requests == 0 and stage.api_usd == {}


def test_sft_steps_come_from_the_data_stage_turns_and_the_effective_batch() -> None:
    sft = {"kind": "sft", "data_from": "data", "accelerate_config": "zero2",
           "trainer": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "num_train_epochs": 3}}
    r = recipe([{**DATA, "eval_fraction": 0.1}, sft], tasks={"name": "clarify-math", "limit": 500})
    plan = only(plan_recipe(r, tokens=TokenAssumptions(mean_turns=2)), "sft")

    # expected: 500 conversations x 2 turns x 0.9 train = 900 rows; batch 2 x 4 x 8 GPUs = 64 -> 15 steps per epoch
    assert plan.expected.steps is not None and plan.bound.steps is not None
    assert plan.expected.steps.rows == pytest.approx(900)
    assert (plan.expected.steps.effective_batch, plan.expected.steps.steps_per_epoch) == (64, 15)
    assert plan.expected.steps.total == 45
    assert plan.bound.steps.rows == pytest.approx(500 * 3 * 0.9)
    assert plan.expected.training_gpu_hours > 0 and plan.expected.counts.policy.requests == 0

    fewer_gpus = only(plan_recipe(r, tokens=TokenAssumptions(mean_turns=2), throughput=Throughput(gpus=4)), "sft")
    assert fewer_gpus.expected.steps is not None and fewer_gpus.expected.steps.effective_batch == 32


def test_a_stated_effective_batch_is_planned_as_a_scaled_launch_would_train_it() -> None:
    from collab.config import load_recipe

    paper = load_recipe(PAPER)
    on_16 = only(plan_recipe(paper, stage="sft", throughput=Throughput(gpus=16)), "sft")

    assert on_16.expected.steps is not None and on_16.expected.steps.effective_batch == 64  # not 2 x 4 x 16 = 128
    assert ("effective_batch_size 64 kept on 16 processes: gradient_accumulation_steps 4 -> 2, as `collab launch slurm "
            "--scale-batch` sets it") in " ".join(on_16.notes)
    on_24 = only(plan_recipe(paper, stage="sft", throughput=Throughput(gpus=24)), "sft")
    assert on_24.expected.steps is not None and on_24.expected.steps.effective_batch == 192
    assert any("no gradient_accumulation_steps keeps it on 24 processes, so a launch is refused" in n
               for n in on_24.notes)


def test_dpo_rows_are_the_pair_yield_of_scored_turns_and_max_steps_wins() -> None:
    dpo = {"kind": "dpo", "data_from": "data", "trainer": {"per_device_train_batch_size": 4, "max_steps": 7}}
    plan = only(plan_recipe(recipe([DATA, dpo]), tokens=SIMPLE), "dpo")

    assert plan.expected.steps is not None
    assert plan.expected.steps.rows == pytest.approx(10 * 2 * 0.5)  # 10 conversations x 2 turns x yield 0.5
    assert plan.expected.steps.effective_batch == 4  # the cpu accelerate config: one process
    assert plan.expected.steps.total == 7


def test_finished_data_stage_gives_measured_rows(tmp_path: Path) -> None:
    dpo = {"kind": "dpo", "data_from": "data", "trainer": {"per_device_train_batch_size": 4}}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stats.json").write_text(json.dumps({"pairs": {"train": 37, "eval": 3},
                                                              "sft_rows": {"train": 50, "eval": 5}}))
    plan = only(plan_recipe(recipe([DATA, dpo]), run_dir=tmp_path), "dpo")

    assert plan.bound.steps is not None and plan.bound.steps.rows == 37
    assert plan.bound.steps.steps_per_epoch == 10
    assert any("measured" in n for n in plan.notes)


def test_online_dpo_scores_two_completions_per_prompt() -> None:
    online = {"kind": "online_dpo", "data_from": "data", "accelerate_config": "zero2",
              "trainer": {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4, "num_train_epochs": 1,
                          "beta": [0.1], "max_new_tokens": 256}}
    plan = only(plan_recipe(recipe([DATA, online]), tokens=SIMPLE), "online_dpo")
    e = plan.expected

    assert e.counts.conversations == 10 * 2 * 2  # 20 prompts (10 conversations x 2 turns) x 2 completions
    # each completion: 1 policy request + S=3 rollouts x w=2 policy turns
    assert e.counts.policy.requests == pytest.approx(40 * (1 + 3 * 2))
    assert e.counts.simulator.requests == pytest.approx(40 * 3 * 2)
    assert e.counts.judge.requests == pytest.approx(40 * 3)
    assert e.steps is not None and (e.steps.effective_batch, e.steps.total) == (32, 1)


def test_grpo_counts_generations_and_ppo_style_iterations() -> None:
    grpo = {"kind": "grpo", "data_from": "data", "accelerate_config": "zero2",
            "trainer": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "num_generations": 4,
                        "num_iterations": 2, "num_train_epochs": 5, "max_completion_length": 256}}
    plan = only(plan_recipe(recipe([DATA, grpo], tasks={"name": "clarify-math", "limit": 100}), tokens=SIMPLE), "grpo")
    e = plan.expected

    assert e.counts.sampled == 100 * 2 * 4 * 5  # 200 prompts x 4 generations x 5 epochs
    assert e.steps is not None
    assert e.steps.rows == 200 * 4 * 2  # every completion is trained on num_iterations times
    assert (e.steps.effective_batch, e.steps.steps_per_epoch, e.steps.total) == (64, 25, 125)


def test_online_stage_without_data_from_trains_on_the_openings() -> None:
    grpo = {"kind": "grpo", "trainer": {"per_device_train_batch_size": 2, "num_generations": 2,
                                        "num_train_epochs": 1, "max_completion_length": 64}}
    plan = only(plan_recipe(recipe([grpo]), tokens=SIMPLE), "grpo")

    assert plan.bound.counts.sampled == plan.expected.counts.sampled == 10 * 2  # 10 openings x 2 generations
    assert plan.bound.counts.turns == 1


def test_online_prompts_are_measured_once_the_data_stage_has_run(tmp_path: Path) -> None:
    online = {"kind": "online_dpo", "data_from": "data", "trainer": {"per_device_train_batch_size": 1,
                                                                     "num_train_epochs": 1, "beta": [0.1]}}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stats.json").write_text(json.dumps({"conversations": 10, "turns": 23}))
    plan = only(plan_recipe(recipe([DATA, online]), run_dir=tmp_path), "online_dpo")

    assert plan.bound.counts.sampled == plan.expected.counts.sampled == 23 * 2
    assert plan.bound.counts.turns == pytest.approx(2.3)


def test_eval_counts_models_tasks_runs_and_turns() -> None:
    ev = {"kind": "eval", "models": ["a", "b", "c"], "runs": 2}
    plan = only(plan_recipe(recipe([ev], simulator={"kind": "sharded", "max_turns": 4}), tokens=SIMPLE,
                            tasks=TaskCounts(eval=6)), "eval")
    b = plan.bound.counts

    assert b.conversations == 3 * 6 * 2
    assert b.policy.requests == 36 * 4 and b.simulator.requests == 36 * 4
    assert b.judge.requests == 36  # one rating per conversation
    assert plan.expected.counts.policy.requests == 36 * 2  # mean_turns = 2


def test_eval_stage_settings_override_the_recipes_tasks_and_turns() -> None:
    ev = {"kind": "eval", "models": ["a"], "tasks": "humaneval-chat", "limit": 5, "max_turns": 3}
    plan = only(plan_recipe(recipe([ev]), tokens=SIMPLE), "eval")

    assert plan.bound.counts.conversations == 5 and plan.bound.counts.turns == 3


def test_eval_without_models_compares_the_base_and_every_trained_stage() -> None:
    sft = {"kind": "sft", "data_from": "data"}
    plan = only(plan_recipe(recipe([DATA, sft, {"kind": "eval"}]), tokens=SIMPLE), "eval")

    assert plan.bound.counts.conversations == 2 * 10


def test_hub_task_set_without_limit_or_local_copy_asks_for_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLLAB_HUB_DATA_DIR", raising=False)
    r = recipe([DATA], tasks={"name": "collabllm-math-hard"})
    with pytest.raises(CollabError, match="--tasks-count"):
        plan_recipe(r, tasks=TaskCounts())  # no limit and no local copy: counting would download the set

    assert only(plan_recipe(r, tasks=TaskCounts(train=20)), "data").bound.counts.conversations == 20


def test_task_set_without_limit_is_counted_when_it_loads_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    from collab.tasks.registry import load_task_set

    monkeypatch.setenv("COLLAB_HUB_DATA_DIR", str(REPO / "tests" / "fixtures" / "collabllm"))
    expected = len(load_task_set("collabllm-math-hard", split="train"))
    plan = plan_recipe(recipe([DATA], tasks={"name": "collabllm-math-hard"}))

    assert expected > 0 and only(plan, "data").bound.counts.conversations == expected


def test_only_the_named_stage_is_planned() -> None:
    plan = plan_recipe(recipe([DATA, {"kind": "sft", "data_from": "data"}]), stage="sft")

    assert [s.label for s in plan.stages] == ["sft"]


def test_cli_prints_every_stage_and_applies_assumption_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(PAPER), "--gpus", "4", "--policy-tokens-per-s", "5000", "--mean-turns", "3"]) == 0
    out = capsys.readouterr().out

    for label in ("'data'", "'sft'", "'dpo'", "'online_dpo'", "'grpo'", "'eval'", "total"):
        assert f"stage {label}" in out or label == "total" and "total" in out
    assert "gpus=4" in out and "policy-tokens-per-s=5000" in out and "mean-turns=3" in out
    assert "API cost: judge" in out and "wall-clock hours on 4 GPUs" in out


def test_cli_plans_one_stage_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(PAPER), "--stage", "data", "--set", "tasks.limit=10", "--set",
                 "stages.data.candidates=2"]) == 0
    out = capsys.readouterr().out

    assert "stage 'data'" in out and "stage 'sft'" not in out
    assert "10 conversations x <= 7 turns, K=2 candidates" in out


def test_cli_refuses_a_nonpositive_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(PAPER), "--gpus", "0"]) == 2
    assert "gpus must be > 0" in capsys.readouterr().err


def test_a_cpu_recipe_is_planned_without_any_gpu_quantity(capsys: pytest.CaptureFixture[str]) -> None:
    quickstart = REPO / "recipes" / "quickstart.yaml"

    assert main(["plan", str(quickstart)]) == 0
    cpu_plan = capsys.readouterr().out
    assert main(["plan", str(quickstart), "--gpus", "2"]) == 0
    gpu_plan = capsys.readouterr().out

    assert "GPU-hours" not in cpu_plan and "wall-clock hours on" not in cpu_plan and "gpus=8" not in cpu_plan
    assert "8 GPUs" not in cpu_plan and "a CPU recipe" in cpu_plan
    assert "wall-clock hours on 2 GPUs" in gpu_plan
