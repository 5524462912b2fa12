"""Build the running parts (backends, simulator, reward) from a validated recipe. The only place that maps
configuration onto library objects."""

from __future__ import annotations

from pathlib import Path

from collab.backends.base import Backend
from collab.backends.cache import CACHE_FILE, RequestCache
from collab.backends.registry import make_backend
from collab.config import Recipe
from collab.reward import MultiturnReward
from collab.simulators.base import UserSimulator


def build_policy(recipe: Recipe, cache: RequestCache | None = None, model: str | None = None) -> Backend:
    config = recipe.policy.model_copy(update={"dtype": recipe.model.dtype}) if recipe.policy.kind != "openai" else recipe.policy
    return make_backend(config, default_model=model or recipe.model.name, cache=cache, where="policy")


def build_simulator(recipe: Recipe, cache: RequestCache | None = None) -> UserSimulator:
    from collab.simulators.registry import make_simulator

    sim = recipe.simulator
    backend = None
    if sim.kind == "llm" and sim.backend is not None:
        backend = make_backend(sim.backend, default_model=recipe.model.name, cache=cache, where="simulator.backend")
    options: dict[str, object] = {"max_turns": sim.max_turns}
    if sim.kind == "llm":
        options.update(temperature=sim.temperature, max_new_tokens=sim.max_new_tokens, max_reasks=sim.max_reasks)
    else:
        options.update(mode=sim.mode, give_up=sim.give_up, recap=sim.recap)
    return make_simulator(sim.kind, backend=backend, **options)


def build_reward(recipe: Recipe, policy: Backend, simulator: UserSimulator, cache: RequestCache | None = None) -> MultiturnReward:
    judge = None
    if recipe.reward.interactivity == "judge" and recipe.judge.backend is not None:
        from collab.metrics.interactivity import InteractivityJudge

        judge_backend = make_backend(recipe.judge.backend, default_model=recipe.model.name, cache=cache, where="judge.backend")
        judge = InteractivityJudge(judge_backend, max_reasks=recipe.judge.max_reasks)
    return MultiturnReward(policy, simulator, recipe.reward, judge=judge, system_prompt=recipe.model.system_prompt)


def cache_for(run_dir: Path) -> RequestCache:
    return RequestCache(run_dir / CACHE_FILE)
