"""Pre-flight: what a recipe's stages will need, checked before anything is submitted or started.

On a cluster a missing task file, an unset endpoint variable or a package missing from the environment shows up only
after the queue wait and a model load. `collab launch slurm`, `collab recipes validate` and `collab plan` check the
same things first, on the submitting machine (Slurm jobs inherit its environment and software): the task files the
stages read load without error, every OpenAI-compatible backend a stage talks to has its URL and API key variables
set, the packages the stages import are importable (vLLM, DeepSpeed), and every vLLM engine the stages build can
hold the KV cache of one full sequence in its GPU share (collab.plan.kvcache; an engine whose model's shape is
unknown is reported as not checked). Every problem is reported at once, one paragraph each.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from collab.config import BackendConfig, DataStage, EvalStage, Recipe, StageBase, TrainerStage
from collab.errors import CollabError
from collab.stages.kinds import KINDS

if TYPE_CHECKING:  # collab.plan imports this module: its names are imported where they are used
    from collab.plan.kvcache import EngineFit


@dataclass(frozen=True)
class Problem:
    """One thing that would stop a stage: where (file or recipe key), what, and the fix."""

    where: str
    message: str
    fix: str

    def paragraph(self) -> str:
        return f"{self.where + ': ' if self.where else ''}{self.message.rstrip('.')}. Fix: {self.fix}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _backends(recipe: Recipe, stage: StageBase) -> list[tuple[str, BackendConfig]]:
    """(recipe key, backend) of every backend `stage` generates with."""
    if not KINDS[stage.kind].generates:  # type: ignore[attr-defined]
        return []
    found = [("policy", recipe.policy)]
    if recipe.simulator.kind == "llm" and recipe.simulator.backend is not None:
        found.append(("simulator.backend", recipe.simulator.backend))
    if recipe.reward.interactivity == "judge" and recipe.judge.backend is not None:
        found.append(("judge.backend", recipe.judge.backend))
    return found


def backend_problems(key: str, backend: BackendConfig, environ: dict[str, str]) -> list[Problem]:
    from collab.backends.openai_backend import _is_loopback

    if backend.kind == "vllm" and not _importable("vllm"):
        return [Problem(f"{key}.kind", "the vllm backend needs the vllm package, which is not importable here",
                        "install it in the environment the jobs use (`pip install '.[vllm]'` on a GPU machine), or "
                        f"set {key}.kind to hf or openai.")]
    if backend.kind != "openai":
        return []
    problems = []
    base_url = backend.base_url
    if backend.base_url_env:
        base_url = environ.get(backend.base_url_env) or base_url
        if not base_url:
            problems.append(Problem(f"{key}.base_url_env", f"environment variable {backend.base_url_env} is not set "
                                    f"(the endpoint of model {backend.model!r})",
                                    f"export {backend.base_url_env}=https://HOST/v1 before submitting (jobs inherit "
                                    f"the environment), or set {key}.base_url."))
    elif not base_url:
        problems.append(Problem(f"{key}.base_url", f"the openai backend of model {backend.model!r} has no endpoint",
                                f"set {key}.base_url, or {key}.base_url_env to the variable that holds it."))
    if not environ.get(backend.api_key_env) and not (base_url and _is_loopback(base_url)):
        problems.append(Problem(f"{key}.api_key_env", f"environment variable {backend.api_key_env} (the API key of "
                                f"model {backend.model!r}) is not set",
                                f"export {backend.api_key_env}=... before submitting, or set {key}.api_key_env to the "
                                "variable that holds the key."))
    return problems


def trainer_problems(index: int, stage: TrainerStage) -> list[Problem]:
    from collab.launch import accelerate_config_path

    problems = []
    where = f"stages.{index} (stage '{stage.label}')"
    path = accelerate_config_path(stage.accelerate_config)
    if not path.is_file():
        problems.append(Problem(f"{where}.accelerate_config", f"accelerate config {stage.accelerate_config!r} does "
                                f"not exist ({path})", "use one of cpu, ddp, zero2, zero3, fsdp2, or a path to a "
                                "config file."))
    else:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            problems.append(Problem(str(path), f"cannot read the accelerate config: {e}", "fix the YAML file."))
            config = {}
        uses_deepspeed = isinstance(config, dict) and (config.get("distributed_type") == "DEEPSPEED"
                                                       or "deepspeed_config" in config)
        if uses_deepspeed and not _importable("deepspeed"):
            problems.append(Problem(f"{where}.accelerate_config", f"{path.name} launches with DeepSpeed, which is not "
                                    "importable here", "`pip install deepspeed` in the environment the jobs use, or "
                                    "use the ddp or fsdp2 accelerate config."))
    if stage.trainer.get("use_vllm") and not _importable("vllm"):
        problems.append(Problem(f"{where}.trainer.use_vllm", "the trainer generates with vLLM, which is not "
                                "importable here", "install vllm in the environment the jobs use, or set "
                                f"stages.{index}.trainer.use_vllm=false."))
    return problems


def task_problems(recipe: Recipe, stages: Iterable[StageBase], *, files_only: bool = False) -> list[Problem]:
    """Load every task set the stages read: a file is parsed, a registered set is built (unless `files_only`: a
    hub set may need the network)."""
    from collab.tasks.registry import _looks_like_path, load_task_set

    wanted: dict[tuple[str, str], str] = {}

    def want(name: str, split: str, key: str) -> None:
        # A file is the whole set whatever the split: load (and report) it once.
        wanted.setdefault((name, "" if _looks_like_path(name) else split), key)

    for stage in stages:
        if isinstance(stage, EvalStage):
            want(stage.tasks or recipe.tasks.name, stage.split or recipe.tasks.eval_split,
                 f"stages (eval stage '{stage.label}')")
        elif isinstance(stage, (DataStage, TrainerStage)) and KINDS[stage.kind].generates:
            want(recipe.tasks.name, recipe.tasks.split, "tasks")
    problems = []
    for (name, split), key in wanted.items():
        if files_only and not _looks_like_path(name):
            continue
        try:
            load_task_set(name, split=split or recipe.tasks.split, limit=recipe.tasks.limit, seed=recipe.tasks.seed)
        except CollabError as e:
            text = str(e)
            message, _, fix = text.partition(" Fix: ")
            problems.append(Problem("" if message.startswith("tasks.") else key, message, fix or "see docs/tasks.md."))
    return problems


def environment_problems(recipe: Recipe, stages: list[str] | None = None, *,
                         environ: dict[str, str] | None = None) -> list[Problem]:
    """The endpoint variables and importable packages that `stages` (labels; default all) of `recipe` need."""
    environ = dict(os.environ) if environ is None else environ
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, stage in _chosen(recipe, stages):
        for key, backend in _backends(recipe, stage):
            if key not in seen:
                seen.add(key)
                problems += backend_problems(key, backend, environ)
        if isinstance(stage, TrainerStage):
            problems += trainer_problems(index, stage)
    return problems


def _chosen(recipe: Recipe, stages: list[str] | None) -> list[tuple[int, StageBase]]:
    return [(i, s) for i, s in enumerate(recipe.stages) if stages is None or s.label in stages]


def preflight(recipe: Recipe, stages: list[str] | None = None, *, environ: dict[str, str] | None = None,
              environment: bool = True, files_only: bool = False, memory: MemoryCheck | None = None) -> list[Problem]:
    """Everything that would stop `stages` (labels; default all) of `recipe`: the task sets and the vLLM engines'
    memory always, and with `environment` the endpoint variables and importable packages."""
    problems = task_problems(recipe, [s for _, s in _chosen(recipe, stages)], files_only=files_only)
    problems += (memory or MemoryCheck()).problems(recipe, stages)
    return problems + (environment_problems(recipe, stages, environ=environ) if environment else [])


@dataclass(frozen=True)
class MemoryCheck:
    """The GPU the vLLM engines are checked against (collab.plan.kvcache).

    Parameters:
        gpu_memory_gb: Memory of one GPU in GiB (`--gpu-memory-gb`).
        gpus_per_node: GPUs of a node, which an empty serve.tensor_parallel_size shards over; empty: 8.
    """

    gpu_memory_gb: float = 80.0
    gpus_per_node: int | None = None

    def fits(self, recipe: Recipe, stages: list[str] | None = None) -> list[EngineFit]:
        from collab.plan.kvcache import check_engines

        return check_engines(recipe, stages, gpu_memory_gb=self.gpu_memory_gb, gpus_per_node=self.gpus_per_node)

    def problems(self, recipe: Recipe, stages: list[str] | None = None) -> list[Problem]:
        from collab.plan.kvcache import engine_problems

        return engine_problems(self.fits(recipe, stages))

    def notes(self, recipe: Recipe, stages: list[str] | None = None) -> list[str]:
        """The engines that could not be checked, one line each (unknown model shape)."""
        from collab.plan.kvcache import skipped_notes

        return skipped_notes(self.fits(recipe, stages))


def report(problems: list[Problem], source: str) -> str:
    body = "\n\n".join(f"  {i}. {p.paragraph()}" for i, p in enumerate(problems, start=1))
    return (f"{source}: pre-flight found {len(problems)} problem{'s' if len(problems) > 1 else ''} that would stop "
            f"the run:\n\n{body}\n")


def check(recipe: Recipe, source: str, stages: list[str] | None = None, *, environment: bool = True,
          files_only: bool = False, memory: MemoryCheck | None = None) -> list[str]:
    """Raise one CollabError listing every pre-flight problem (one paragraph each); else return the notes of what
    could not be checked (a vLLM engine whose model's shape is unknown), for the caller to print."""
    memory = memory or MemoryCheck()
    problems = preflight(recipe, stages, environment=environment, files_only=files_only, memory=memory)
    if problems:
        raise CollabError(report(problems, source),
                          fix="correct them and run the command again (--no-preflight skips the environment checks, "
                          "e.g. when the compute nodes' environment differs from this machine's).")
    return memory.notes(recipe, stages)
