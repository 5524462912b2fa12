"""Build the running parts (backends, judge, simulator, reward, request cache) from a validated recipe: the only
place that maps configuration onto library objects. Data, training, evaluation and `collab simulate` all build
their parts here, so a recipe section means the same thing in every stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from collab.backends.base import Backend
from collab.backends.cache import CACHE_FILE, RequestCache
from collab.backends.registry import make_backend
from collab.config import BackendConfig, Recipe
from collab.errors import CollabError
from collab.reward import MultiturnReward
from collab.simulators.base import UserSimulator

if TYPE_CHECKING:
    from collab.metrics.interactivity import InteractivityJudge

OPENAI_PREFIX = "openai:"


def cache_for(run_dir: Path) -> RequestCache:
    """The run's request cache (`<run>/cache.sqlite`), shared by all of its backends, stages and processes."""
    return RequestCache(run_dir / CACHE_FILE)


def parse_openai_spec(spec: str, *, where: str = "--model") -> tuple[str, str | None]:
    """`openai:MODEL@BASE_URL` -> (MODEL, BASE_URL); `openai:MODEL` -> (MODEL, None: the SDK's default endpoint)."""
    if not spec.startswith(OPENAI_PREFIX):
        raise ValueError(f"not an openai model spec: {spec!r}")
    model, _, base_url = spec[len(OPENAI_PREFIX) :].partition("@")
    if not model:
        raise CollabError(f"model spec {spec!r} names no model", where=where,
                          fix="write openai:MODEL@http://HOST:PORT/v1.")
    return model, base_url or None


def backend_config_for_spec(spec: str, *, where: str = "--model") -> BackendConfig:
    """The backend section a command-line model spec stands for: `openai:MODEL@BASE_URL` (or `openai:MODEL`) is an
    OpenAI-compatible endpoint; anything else (a model name, a checkpoint or LoRA adapter directory) is a local
    transformers model with the section's defaults."""
    if spec.startswith(OPENAI_PREFIX):
        model, base_url = parse_openai_spec(spec, where=where)
        return BackendConfig(kind="openai", model=model, base_url=base_url)
    return BackendConfig(model=spec)


def build_policy(recipe: Recipe, cache: RequestCache | None = None, model: str | None = None) -> Backend:
    """The policy backend of `recipe.policy` (with `model.dtype` for local weights); `model` replaces the
    recipe's model name."""
    config = recipe.policy.model_copy(update={"dtype": recipe.model.dtype}) if recipe.policy.kind != "openai" else recipe.policy
    return make_backend(config, default_model=model or recipe.model.name, cache=cache, where="policy")


def build_eval_model(recipe: Recipe, spec: str, cache: RequestCache | None = None) -> Backend:
    """The backend of a model under evaluation: an `openai:` spec is its endpoint; a name or checkpoint folder
    loads with the recipe's policy section and `model.dtype`. Checkpoints are local files, so an `openai` policy
    section, which cannot serve them, gives way to a transformers backend of the same batch size."""
    if spec.startswith(OPENAI_PREFIX):
        return make_backend(backend_config_for_spec(spec), default_model=spec, cache=cache, where="--model")
    policy = recipe.policy
    if policy.kind == "openai":
        policy = BackendConfig(max_batch_size=policy.max_batch_size)
    config = policy.model_copy(update={"dtype": recipe.model.dtype, "model": spec})
    return make_backend(config, default_model=spec, cache=cache, where="policy")


def build_simulator(recipe: Recipe, cache: RequestCache | None = None) -> UserSimulator:
    """The simulated user of `recipe.simulator`, with its own backend when it is an LLM."""
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


def build_judge(recipe: Recipe, cache: RequestCache | None = None) -> InteractivityJudge | None:
    """The interactivity judge when the reward asks for one (`reward.interactivity: judge`) and `judge.backend`
    names its model; None otherwise."""
    if recipe.reward.interactivity != "judge" or recipe.judge.backend is None:
        return None
    from collab.metrics.interactivity import InteractivityJudge

    backend = make_backend(recipe.judge.backend, default_model=recipe.model.name, cache=cache, where="judge.backend")
    return InteractivityJudge(backend, max_reasks=recipe.judge.max_reasks)


def build_reward(recipe: Recipe, policy: Backend, simulator: UserSimulator, cache: RequestCache | None = None) -> MultiturnReward:
    """The MR of `recipe.reward`, rolling out `policy` against `simulator`."""
    return MultiturnReward(policy, simulator, recipe.reward, judge=build_judge(recipe, cache),
                           system_prompt=recipe.model.system_prompt)
