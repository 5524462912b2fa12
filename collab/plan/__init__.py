"""`collab plan`: the LLM calls, tokens, API cost, GPU-hours and optimizer steps a recipe's stages will take,
counted from the recipe's sizes and MR settings without running anything, and whether its vLLM engines fit the GPU.

    counts.py    requests and tokens per party (policy, simulator, judge) of data, online and eval stages
    cost.py      API dollars (price_per_million), GPU-hours (Throughput), optimizer steps
    planner.py   a recipe -> one StagePlan per stage (upper bound and expected columns)
    render.py    rich tables
    options.py   the command-line options (one per assumption field)
    shapes.py    a model's layers, KV heads, head size and parameters (config.json, or a table of known models)
    kvcache.py   every vLLM engine of a recipe: does one max_model_len sequence's KV cache fit its GPU share
"""

from typing import Any

from collab.plan.cost import Steps, Throughput
from collab.plan.counts import Counts, TokenAssumptions, Usage

_PLANNER = ("RecipePlan", "Scenario", "StagePlan", "TaskCounts", "plan_recipe")


def __getattr__(name: str) -> Any:
    # The planner imports the recipe schema; loaded on first use so that building the CLI parser stays fast.
    if name in _PLANNER:
        from collab.plan import planner

        return getattr(planner, name)
    raise AttributeError(f"module 'collab.plan' has no attribute {name!r}")

__all__ = [
    "Counts",
    "RecipePlan",
    "Scenario",
    "StagePlan",
    "Steps",
    "TaskCounts",
    "Throughput",
    "TokenAssumptions",
    "Usage",
    "plan_recipe",
]
