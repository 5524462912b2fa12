"""How a training stage's processes are launched, on one machine or many.

A trainer stage always runs as `accelerate launch --config_file accelerate_configs/<cfg>.yaml ... -m
collab.train.rank_main --run-dir RUN --stage NAME`. On one machine `collab train` builds that command from the recipe.
On a cluster every node runs the same `collab train` / `collab resume`, and the job script (slurm/train.slurm) tells
each node its place through environment variables, so the recipe never holds cluster addresses:

- COLLAB_ACCELERATE_ARGS: extra `accelerate launch` flags spliced in before `-m` (--num_machines, --num_processes,
  --machine_rank, --main_process_ip, --main_process_port, --rdzv_backend c10d).
- COLLAB_ACCELERATE_CONFIG: overrides the stage's `accelerate_config` (a name in accelerate_configs/ or a path).
- COLLAB_VLLM_HOST / COLLAB_VLLM_PORT: where `trl vllm-serve` runs in vLLM server mode (the trainer's
  vllm_server_host / vllm_server_port).

`accelerate_command` is the one function that turns these into the command, used by `collab train` and shown by
`collab launch slurm --dry-run`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

ACCELERATE_ARGS_ENV = "COLLAB_ACCELERATE_ARGS"
ACCELERATE_CONFIG_ENV = "COLLAB_ACCELERATE_CONFIG"
VLLM_HOST_ENV = "COLLAB_VLLM_HOST"
VLLM_PORT_ENV = "COLLAB_VLLM_PORT"


def project_root() -> Path:
    """The source checkout holding accelerate_configs/ and slurm/ (next to the package), else the current folder."""
    checkout = Path(__file__).resolve().parent.parent.parent
    return checkout if (checkout / "accelerate_configs").is_dir() else Path.cwd()


def accelerate_config_path(name: str) -> Path:
    """`zero3` -> accelerate_configs/zero3.yaml; a value with a slash or a .yaml suffix is taken as a path."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name)
    return project_root() / "accelerate_configs" / f"{name}.yaml"


def multinode_args(
    *, num_machines: int, num_processes: int, main_process_ip: str, main_process_port: int | str,
    machine_rank: int | str | None = None,
) -> list[str]:
    """The `accelerate launch` flags of one node of a multi-node job with c10d rendezvous."""
    args = [
        "--num_machines", str(num_machines), "--num_processes", str(num_processes),
        "--main_process_ip", main_process_ip, "--main_process_port", str(main_process_port),
        "--rdzv_backend", "c10d",
    ]
    if machine_rank is not None:
        args += ["--machine_rank", str(machine_rank)]
    return args


def accelerate_command(
    accelerate_config: str, run_dir: str | Path, stage: str, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The command that runs one trainer stage, honouring COLLAB_ACCELERATE_CONFIG and COLLAB_ACCELERATE_ARGS."""
    env = os.environ if environ is None else environ
    config = env.get(ACCELERATE_CONFIG_ENV) or accelerate_config
    extra = shlex.split(env.get(ACCELERATE_ARGS_ENV, ""))
    return [
        "accelerate", "launch", "--config_file", str(accelerate_config_path(config)), *extra,
        "-m", "collab.train.rank_main", "--run-dir", str(run_dir), "--stage", stage,
    ]


def vllm_server_args(environ: Mapping[str, str] | None = None) -> dict[str, str | int]:
    """Trainer arguments pointing at the job's vLLM server node (empty outside vLLM server mode).

    Online trainer stages merge these over the recipe's `trainer` arguments, so the host the job script chose wins
    over any address in the recipe (the node differs at every restart)."""
    env = os.environ if environ is None else environ
    host = env.get(VLLM_HOST_ENV)
    if not host:
        return {}
    args: dict[str, str | int] = {"vllm_server_host": host}
    if env.get(VLLM_PORT_ENV):
        args["vllm_server_port"] = int(env[VLLM_PORT_ENV])
    return args
