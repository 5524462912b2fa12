"""Command-line options of `collab plan`: one flag per assumption field (`--policy-tokens-per-s 3000`), generated
from the dataclasses so a new assumption is an option without further code."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from collab.errors import CollabError
from collab.plan.cost import Throughput
from collab.plan.counts import TokenAssumptions

ASSUMPTION_CLASSES: tuple[type, ...] = (TokenAssumptions, Throughput)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --stage, the task counts and one option per assumption field to `parser`."""
    parser.add_argument("--stage", default=None, help="plan only this stage")
    parser.add_argument("--tasks-count", type=int, default=None, metavar="N",
                        help="tasks of tasks.split (default: tasks.limit, else the loaded task set)")
    parser.add_argument("--eval-tasks-count", type=int, default=None, metavar="N",
                        help="tasks of tasks.eval_split (default: tasks.limit, else the loaded task set)")
    group = parser.add_argument_group("assumptions", "sizes and throughputs the plan assumes (defaults in brackets)")
    for cls in ASSUMPTION_CLASSES:
        for f in dataclasses.fields(cls):
            kind = int if f.type in ("int", int) else float
            group.add_argument(flag(f.name), dest=f"assume_{f.name}", type=kind, default=None, metavar="X",
                               help=f"{f.metadata.get('help', '')} [{f.default:g}]")


def add_gpu_memory_argument(parser: argparse.ArgumentParser) -> None:
    """`--gpu-memory-gb` for the commands that run pre-flight without planning (`collab recipes validate`,
    `collab launch slurm`); `collab plan` has it as an assumption (Throughput.gpu_memory_gb)."""
    default = next(f.default for f in dataclasses.fields(Throughput) if f.name == "gpu_memory_gb")
    parser.add_argument(flag("gpu_memory_gb"), dest="assume_gpu_memory_gb", type=float, default=None, metavar="X",
                        help=f"memory of one GPU in GiB, for the check that every vLLM engine can hold the KV cache "
                        f"of one max_model_len sequence [{default:g}]")


def gpu_memory_gb(args: argparse.Namespace) -> float:
    """The GPU memory given on the command line, else Throughput's default; refused unless positive."""
    value = getattr(args, "assume_gpu_memory_gb", None)
    if value is None:
        return Throughput().gpu_memory_gb
    if value <= 0:
        raise CollabError(f"--gpu-memory-gb must be > 0, got {value:g}", fix="pass the memory of one GPU in GiB.")
    return float(value)


def assumptions_from_args(args: argparse.Namespace) -> tuple[TokenAssumptions, Throughput]:
    """The assumption dataclasses with the options given on the command line applied."""
    built: list[Any] = []
    for cls in ASSUMPTION_CLASSES:
        given = {f.name: getattr(args, f"assume_{f.name}") for f in dataclasses.fields(cls)
                 if getattr(args, f"assume_{f.name}", None) is not None}
        try:
            built.append(cls(**given))
        except ValueError as e:
            raise CollabError(f"collab plan: {e}", fix="pass a positive value.") from None
    return built[0], built[1]


def is_cpu_recipe(recipe: Any) -> bool:
    """Whether every part of `recipe` runs on CPUs: trainer stages on the cpu accelerate config, no vLLM anywhere
    (a recipe planned this way without --gpus must not be described in GPUs)."""
    from collab.config import TrainerStage

    backends = [recipe.policy, recipe.simulator.backend, recipe.judge.backend]
    if any(b is not None and b.kind == "vllm" for b in backends):
        return False
    return all(s.accelerate_config == "cpu" and not s.trainer.get("use_vllm")
               for s in recipe.stages if isinstance(s, TrainerStage))
