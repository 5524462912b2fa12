"""`collab launch slurm`: turn a recipe into the sbatch commands that run it on a Slurm cluster.

Each stage becomes one job (a data stage two), chained with afterok dependencies in recipe order:

- data stage -> slurm/data.slurm as an array (one shard per task), then a merge job after every shard succeeded;
- trainer stage -> slurm/train.slurm on --nodes nodes, plus one node for `trl vllm-serve` when the stage's trainer
  uses vLLM in server mode (`use_vllm: true`, `vllm_mode: server`, no `vllm_server_base_url`);
- eval stage -> slurm/eval.slurm on one node.

With the recipe's `serve:` (a self-hosted user simulator / judge), every job that talks to them (data shards, online
trainer stages, eval) gets `serve.nodes` more nodes, whose `vllm serve` the job starts and waits for (slurm/serve.sh).

All jobs are requeueable, append to their log in RUN_DIR/logs/, and get USR1 `signal_s` seconds before their time
limit so they can save and requeue (see slurm/train.slurm). Building the commands is separate from submitting
them, so --dry-run shows exactly what would be submitted and tests need no cluster.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from collab.config import DataStage, EvalStage, Recipe, ServeConfig, StageBase, TrainerStage, load_recipe
from collab.errors import CollabError
from collab.launch import ACCELERATE_ARGS_ENV, accelerate_command, multinode_args, project_root
from collab.run.layout import StagePaths
from collab.stages.kinds import KINDS
from collab.train.batch import batch_plan, check_effective_batch, scaled_accumulation

_TIME_FORMATS = [  # the --time formats sbatch accepts, as (pattern, field names)
    (r"(?P<m>\d+)", "m"),
    (r"(?P<m>\d+):(?P<s>\d+)", "ms"),
    (r"(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)", "hms"),
    (r"(?P<d>\d+)-(?P<h>\d+)", "dh"),
    (r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)", "dhm"),
    (r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)", "dhms"),
]
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_time(text: str) -> int:
    """Seconds of a Slurm time limit (`90`, `4:00:00`, `2-12`, `1-00:30:00`); CollabError for anything else."""
    for pattern, _ in _TIME_FORMATS:
        match = re.fullmatch(pattern, text.strip())
        if match:
            seconds = sum(int(v) * _UNITS[k] for k, v in match.groupdict().items())
            if seconds <= 0:
                break
            return seconds
    raise CollabError(f"--time '{text}' is not a Slurm time limit",
                      fix="use minutes (90), hours:minutes:seconds (4:00:00) or days-hours[:minutes[:seconds]] "
                          "(2-12).")


@dataclass(frozen=True)
class SlurmOptions:
    """What the user asks of the cluster; the recipe says what runs.

    Attributes:
        nodes: Training nodes of trainer stages (a vLLM server node comes on top); default shard count of data.
        gpus_per_node: GPUs per node; 0 runs on CPUs (one process per node).
        partition: Slurm partition; empty for the cluster's default.
        time: Time limit of each job (Slurm format); empty for the partition's default.
        cpus_per_task: CPUs per node task; default 8 per GPU, 1 without GPUs.
        stage: Run only this stage; empty for every stage of the recipe, chained in order.
        shards: Array tasks of a data stage; default `nodes`.
        signal_s: Seconds before the time limit at which jobs get USR1 to save and requeue.
        port: Rendezvous port of multi-node training; empty derives one from the job id.
        vllm_tp: Tensor parallel size of the vLLM server; its data parallel size is GPUs per node / this. Empty: all
            GPUs of the server node (one tensor-parallel engine, data parallel 1), the right shape for the dense
            models collab trains: TRL's weight sync then updates one engine, not 8 replicas each holding a full copy.
        scale_batch: Give stages that state effective_batch_size the gradient_accumulation_steps that keeps it on
            this many GPUs (an override of the job), instead of refusing a launch that would change it.
        sbatch_args: Extra sbatch options passed through (--account=..., --qos=..., --exclusive, ...).
    """

    nodes: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    stage: str | None = None
    shards: int | None = None
    signal_s: int = 600
    port: int | None = None
    vllm_tp: int | None = None
    scale_batch: bool = False
    sbatch_args: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.nodes < 1:
            raise CollabError(f"--nodes must be at least 1 (got {self.nodes})")
        if self.gpus_per_node < 0:
            raise CollabError(f"--gpus-per-node must be 0 or more (got {self.gpus_per_node})",
                              fix="use 0 to run on CPUs.")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise CollabError(f"--cpus-per-task must be at least 1 (got {self.cpus_per_task})")
        if self.shards is not None and self.shards < 1:
            raise CollabError(f"--shards must be at least 1 (got {self.shards})")
        if self.signal_s < 1:
            raise CollabError(f"--signal-s must be at least 1 (got {self.signal_s})")
        if self.port is not None and not 1024 <= self.port <= 65535:
            raise CollabError(f"--port must be between 1024 and 65535 (got {self.port})")
        if self.vllm_tp is not None and self.vllm_tp < 1:
            raise CollabError(f"--vllm-tp must be at least 1 (got {self.vllm_tp})")
        if self.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.,-]+", self.partition):
            raise CollabError(f"--partition '{self.partition}' is not a partition name",
                              fix="give a name that `sinfo -s` lists.")
        if self.time is not None:
            limit = parse_time(self.time)
            if self.signal_s >= limit:
                raise CollabError(
                    f"--signal-s {self.signal_s} is not shorter than --time {self.time} ({limit} s): the jobs would "
                    "be told to stop as soon as they start", fix="give a longer --time or a smaller --signal-s.")

    @property
    def cpus(self) -> int:
        return self.cpus_per_task or (8 * self.gpus_per_node if self.gpus_per_node else 1)


@dataclass
class Job:
    """One sbatch submission. `after` is the index of the job it waits for (afterok), if any."""

    label: str
    script: Path
    options: list[str]
    script_args: list[str]
    nodes: int
    gpus_per_node: int
    tasks: int = 1
    after: int | None = None
    inside: list[str] = field(default_factory=list)

    def argv(self, dependency: str | None = None) -> list[str]:
        dep = [f"--dependency=afterok:{dependency}"] if dependency else []
        return ["sbatch", "--parsable", *dep, *self.options, str(self.script), *self.script_args]

    def gpu_seconds(self, limit_s: int) -> int:
        return self.tasks * self.nodes * self.gpus_per_node * limit_s


def show_command(argv: Sequence[str]) -> str:
    """A command as shell text, leaving $VARIABLES (set inside the job) unquoted."""
    return " ".join(a if re.fullmatch(r"\$[A-Z_]+", a) else shlex.quote(a) for a in argv)


def vllm_server_node(stage: TrainerStage) -> bool:
    """Whether the stage's trainer needs a node of its own for `trl vllm-serve`."""
    args = stage.trainer
    return bool(args.get("use_vllm")) and args.get("vllm_mode") == "server" and not args.get("vllm_server_base_url")


def serve_nodes_needed(recipe: Recipe, stage: StageBase) -> int:
    """Nodes a stage's job adds for the recipe's self-hosted simulator/judge: offline trainers never call them."""
    if recipe.serve is None:
        return 0
    if not KINDS[stage.kind].generates:  # type: ignore[attr-defined]
        return 0
    return recipe.serve.nodes


def serve_args(serve: ServeConfig, gpus_per_node: int, label: str) -> list[str]:
    """The --serve-* options of the slurm scripts (parsed by slurm/serve.sh); refuses shapes vLLM cannot run."""
    if gpus_per_node == 0:
        raise CollabError(f"the recipe's serve: (stage '{label}') runs vllm serve, which needs GPUs",
                          where="serve", fix="give --gpus-per-node, or drop serve: and point the simulator/judge "
                          "backends at an OpenAI-compatible endpoint (base_url_env).")
    tp = serve.tensor_parallel_size or gpus_per_node * serve.nodes
    if tp % serve.nodes or tp // serve.nodes > gpus_per_node:
        raise CollabError(
            f"serve.tensor_parallel_size {tp} does not fit serve.nodes {serve.nodes} x --gpus-per-node "
            f"{gpus_per_node}: each serving node takes an equal share of at most {gpus_per_node} GPUs",
            where="serve.tensor_parallel_size",
            fix=f"use a multiple of {serve.nodes} up to {gpus_per_node * serve.nodes}, or leave it empty for all GPUs.")
    return ["--serve-model", serve.model, "--serve-nodes", str(serve.nodes), "--serve-tp", str(tp),
            "--serve-max-len", str(serve.max_model_len), "--serve-port", str(serve.port),
            "--serve-gpu-util", str(serve.gpu_memory_utilization), "--serve-wait-s", str(serve.wait_s)]


def slurm_dir() -> Path:
    return project_root() / "slurm"


class SlurmPlanner:
    """Builds the jobs of a recipe; pure (no cluster, no files written)."""

    def __init__(self, recipe: Recipe, recipe_path: Path, overrides: Sequence[str], options: SlurmOptions,
                 *, cwd: Path | None = None) -> None:
        self.recipe = recipe
        self.recipe_path = recipe_path.resolve()
        self.overrides = list(overrides)
        self.opt = options
        self.cwd = (cwd or Path.cwd()).resolve()
        run_dir = recipe.run_dir
        self.run_dir = run_dir if run_dir.is_absolute() else self.cwd / run_dir
        self.logs = self.run_dir / "logs"

    def stages(self) -> list[StageBase]:
        if self.opt.stage:
            return [self.recipe.stage(self.opt.stage)]
        if not self.recipe.stages:
            raise CollabError(f"{self.recipe_path} has no stages to run", fix="add `stages:` to the recipe.")
        # A whole-recipe launch skips stages already finished in the run directory (resubmitting after a failure).
        todo = [s for s in self.recipe.stages if not StagePaths(self.run_dir, s.label).is_done()]
        if not todo:
            raise CollabError(f"every stage of {self.recipe.name} is done in {self.run_dir}",
                              fix="use --stage NAME to rerun one, or another output_dir.")
        return todo

    def plan(self) -> list[Job]:
        jobs: list[Job] = []
        for stage in self.stages():
            after = len(jobs) - 1 if jobs else None
            if isinstance(stage, DataStage):
                jobs += self._data(stage, after, first_index=len(jobs))
            elif isinstance(stage, TrainerStage):
                jobs.append(self._train(stage, after))
            elif isinstance(stage, EvalStage):
                jobs.append(self._eval(stage, after))
            else:  # pragma: no cover - the recipe schema has no other kinds
                raise TypeError(f"unknown stage type {type(stage).__name__}")
        return jobs

    # --- one job per stage kind -----------------------------------------------------------------------------------

    def _common(self, name: str, nodes: int, gpus: int, *, cpus: int, array: str | None = None) -> list[str]:
        o = self.opt
        out = "%x-%A_%a.out" if array else "%x-%j.out"
        opts = [f"--job-name={name}", f"--nodes={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}"]
        if gpus:
            opts.append(f"--gpus-per-node={gpus}")
        if array:
            opts.append(f"--array={array}")
        if o.partition:
            opts.append(f"--partition={o.partition}")
        if o.time:
            opts.append(f"--time={o.time}")
        opts += [f"--chdir={self.cwd}", f"--output={self.logs / out}", "--open-mode=append", "--requeue",
                 f"--signal=B:USR1@{o.signal_s}", f"--export=ALL,COLLAB_SLURM_DIR={slurm_dir()}", *o.sbatch_args]
        return opts

    def _job_name(self, stage: StageBase, suffix: str = "") -> str:
        return f"collab-{self.recipe.name}-{stage.label}{suffix}"

    def _serve(self, stage: StageBase) -> tuple[int, list[str], list[str]]:
        """Extra nodes, --serve-* script options and the dry-run note of a stage's self-hosted simulator/judge."""
        extra = serve_nodes_needed(self.recipe, stage)
        if not extra:
            return 0, [], []
        serve = self.recipe.serve
        assert serve is not None
        args = serve_args(serve, self.opt.gpus_per_node, stage.label)
        tp = args[args.index("--serve-tp") + 1]
        where = "last node" if extra == 1 else f"last {extra} nodes"
        note = (f"{where}: vllm serve {shlex.quote(serve.model)} --port {serve.port} --tensor-parallel-size {tp} "
                f"--max-model-len {serve.max_model_len} (user simulator/judge for {', '.join(serve.roles)}); the "
                f"step starts once /v1/models answers (at most {serve.wait_s}s), with COLLAB_SERVE_BASE_URL set")
        return extra, args, [note]

    def _set_args(self) -> list[str]:
        return [arg for o in self.overrides for arg in ("--set", o)]

    def _train(self, stage: TrainerStage, after: int | None) -> Job:
        o = self.opt
        server = vllm_server_node(stage)
        if server and o.gpus_per_node == 0:
            raise CollabError(f"stage '{stage.label}' uses vLLM in server mode, which needs GPUs",
                              fix="give --gpus-per-node, or set the stage's trainer.vllm_mode to colocate.")
        tp = o.vllm_tp or max(o.gpus_per_node, 1)
        if server and o.gpus_per_node % tp:
            raise CollabError(f"--vllm-tp {tp} does not divide --gpus-per-node {o.gpus_per_node}",
                              fix="give a divisor of the GPUs per node, or leave --vllm-tp out (all of them).")
        serve_extra, serve_opts, inside = self._serve(stage)
        nodes = o.nodes + (1 if server else 0) + serve_extra
        args = ["--recipe", str(self.recipe_path), "--run-dir", str(self.run_dir), "--stage", stage.label,
                "--gpus-per-node", str(o.gpus_per_node), "--accelerate-config", stage.accelerate_config, *serve_opts]
        if server:
            model = str(StagePaths(self.run_dir, stage.init_from).final) if stage.init_from else self.recipe.model.name
            port = int(stage.trainer.get("vllm_server_port", 8000))
            args += ["--vllm-model", model, "--vllm-tp", str(tp), "--vllm-port", str(port)]
            inside.append(f"last node: trl vllm-serve --model {shlex.quote(model)} --tensor_parallel_size "
                          f"{tp} --data_parallel_size {o.gpus_per_node // tp} --port {port}")
        if o.port is not None:
            args += ["--port", str(o.port)]
        batch_note, batch_sets = self._batch(stage)
        if self.overrides or batch_sets:
            args += ["--", *self._set_args(), *batch_sets]
        if o.gpus_per_node and stage.accelerate_config == "cpu":
            inside.insert(0, f"warning: stage '{stage.label}' uses accelerate_config cpu on GPU nodes; for GPUs "
                          f"add --set stages.{stage.label}.accelerate_config=ddp (or zero2, zero3, fsdp2)")
        procs = o.nodes * max(o.gpus_per_node, 1)
        flags = multinode_args(num_machines=o.nodes, num_processes=procs, main_process_ip="$MASTER_ADDR",
                               main_process_port=o.port or "$MASTER_PORT", machine_rank="$SLURM_NODEID")
        command = accelerate_command(stage.accelerate_config, self.run_dir, stage.label,
                                     environ={ACCELERATE_ARGS_ENV: shlex.join(flags)})
        where = f"each of {o.nodes} train nodes" if o.nodes > 1 else "the train node"
        inside.append(f"{where}: {show_command(command)}")
        inside.append(f"(started by `collab train {self.recipe_path.name} --stage {stage.label}`, the same command "
                      "after a requeue: it continues from the newest complete checkpoint)")
        inside.append(batch_note)
        return Job(stage.label, slurm_dir() / "train.slurm",
                   self._common(self._job_name(stage), nodes, o.gpus_per_node, cpus=o.cpus), args,
                   nodes=nodes, gpus_per_node=o.gpus_per_node, after=after, inside=inside)

    def _batch(self, stage: TrainerStage) -> tuple[str, list[str]]:
        """The effective batch on the requested processes, and the override that keeps a stated one
        (--scale-batch); a launch that would change a stated batch is refused with the numbers."""
        world = self.opt.nodes * max(self.opt.gpus_per_node, 1)
        plan = batch_plan(stage, world)
        if plan.matches:
            return plan.describe(), []
        if not self.opt.scale_batch:
            check_effective_batch(stage, world)  # raises, with the numbers and the override that would fix it
        accumulation = scaled_accumulation(stage, world)
        key = f"stages.{stage.label}.trainer.gradient_accumulation_steps"
        return (f"effective batch {plan.declared} kept on {world} processes (--scale-batch): "
                f"gradient_accumulation_steps {plan.accumulation} -> {accumulation}"), ["--set", f"{key}={accumulation}"]

    def _data(self, stage: DataStage, after: int | None, first_index: int) -> list[Job]:
        o = self.opt
        shards = o.shards or o.nodes
        serve_extra, serve_opts, serve_note = self._serve(stage)  # each array task starts its own server
        shard_job = Job(
            stage.label, slurm_dir() / "data.slurm",
            self._common(self._job_name(stage), 1 + serve_extra, o.gpus_per_node, cpus=o.cpus,
                         array=f"0-{shards - 1}"),
            ["shard", str(self.recipe_path), "--stage", stage.label, *serve_opts, *self._set_args()],
            nodes=1 + serve_extra, gpus_per_node=o.gpus_per_node, tasks=shards, after=after,
            inside=[*serve_note, (f"each of {shards} array tasks: collab data {self.recipe_path.name} "
                                  "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")],
        )
        merge_opts = self._common(self._job_name(stage, "-merge"), 1, 0, cpus=1)
        merge_job = Job(f"{stage.label} (merge)", slurm_dir() / "data.slurm", merge_opts,
                        ["merge", str(self.run_dir), "--stage", stage.label], nodes=1, gpus_per_node=0, after=first_index,
                        inside=[f"after every shard succeeded: collab data merge {self.run_dir}"])
        return [shard_job, merge_job]

    def _eval(self, stage: EvalStage, after: int | None) -> Job:
        o = self.opt
        serve_extra, serve_opts, inside = self._serve(stage)
        args = ["--recipe", str(self.recipe_path), "--run-dir", str(self.run_dir), "--stage", stage.label,
                *serve_opts]
        if self.overrides:
            args += ["--", *self._set_args()]
        return Job(stage.label, slurm_dir() / "eval.slurm",
                   self._common(self._job_name(stage), 1 + serve_extra, o.gpus_per_node, cpus=o.cpus), args,
                   nodes=1 + serve_extra, gpus_per_node=o.gpus_per_node, after=after,
                   inside=[*inside, f"one node: collab train {self.recipe_path.name} --stage {stage.label}"])


# --- showing and submitting ---------------------------------------------------------------------------------------


def render(jobs: list[Job], options: SlurmOptions) -> str:
    """The jobs as a shell script: what `--dry-run` prints and what submitting runs, in order."""
    lines = []
    for i, job in enumerate(jobs, 1):
        shape = f"{job.nodes} node{'s' if job.nodes > 1 else ''} x {job.gpus_per_node} GPUs"
        if job.tasks > 1:
            shape = f"{job.tasks} array tasks of {shape}"
        lines.append(f"# {i}/{len(jobs)} stage '{job.label}': {job.script.name}, {shape}")
        lines += [f"#   {text}" for text in job.inside]
        argv = job.argv()
        command = shlex.join(argv[:2])
        if job.after is not None:
            command += f" --dependency=afterok:$JOB{job.after + 1}"
        lines.append(f"JOB{i}=$({command} {shlex.join(argv[2:])})")
    if options.time:
        limit = parse_time(options.time)
        gpu_h = sum(job.gpu_seconds(limit) for job in jobs) / 3600
        lines.append(f"# at most {gpu_h:.1f} GPU-hours if every job runs to its --time {options.time} "
                     "(plus any restarts after preemption)")
    else:
        lines.append("# no --time: each job gets the partition's default time limit")
    return "\n".join(lines)


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run_sbatch(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


# What sbatch's own words mean, in the order they are checked; the last entry is the fallback.
_SBATCH_FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("slurm.conf", "configuration file", "s_p_parse_file"),
     "Slurm's configuration is missing on this machine (sbatch could not read slurm.conf): run on the cluster's "
     "login node, or point SLURM_CONF at the cluster's slurm.conf."),
    (("unable to contact slurm controller", "connection refused", "zero bytes were transmitted"),
     "the Slurm controller does not answer: check `scontrol ping` (slurmctld must be running and reachable)."),
    (("invalid partition",), "check --partition: `sinfo -s` lists the partitions."),
    (("time limit",), "check --time against the partition's limit (`sinfo -o '%P %l'`)."),
    ((), "check --partition, --time and the cluster's limits (`sinfo`)."),
)


def sbatch_fix(output: str) -> str:
    """The fix to suggest for sbatch's error `output`."""
    text = output.lower()
    for needles, fix in _SBATCH_FIXES:
        if not needles or any(needle in text for needle in needles):
            return fix
    return _SBATCH_FIXES[-1][1]


def submit(jobs: list[Job], logs: Path, runner: Runner = _run_sbatch) -> list[str]:
    """Submit the jobs in order (each dependency is an earlier job's id); returns the Slurm job ids."""
    if runner is _run_sbatch and shutil.which("sbatch") is None:
        raise CollabError("sbatch is not on PATH: this machine is not a Slurm login node",
                          fix="run `collab launch slurm` on the cluster, or add --dry-run to see the commands.")
    logs.mkdir(parents=True, exist_ok=True)  # Slurm does not create the folder of --output
    ids: list[str] = []
    for job in jobs:
        argv = job.argv(ids[job.after] if job.after is not None else None)
        done = runner(argv)
        if done.returncode != 0:
            submitted = f" (already submitted: {', '.join(ids)}; `scancel` them if needed)" if ids else ""
            output = done.stderr.strip() or done.stdout.strip()
            raise CollabError(f"sbatch failed for stage '{job.label}': {output}{submitted}", fix=sbatch_fix(output))
        ids.append(done.stdout.strip().split(";")[0])
    return ids


def launch_slurm(recipe_path: str | Path, overrides: Sequence[str], options: SlurmOptions, *, dry_run: bool,
                 echo: Callable[[str], None] = print, runner: Runner = _run_sbatch) -> list[str]:
    """Validate, plan, then print (dry run) or submit. Returns the submitted job ids (none for a dry run)."""
    options.validate()
    recipe = load_recipe(recipe_path, overrides)
    planner = SlurmPlanner(recipe, Path(recipe_path), overrides, options)
    jobs = planner.plan()
    echo(render(jobs, options))
    if dry_run:
        echo("# dry run: nothing submitted")
        return []
    ids = submit(jobs, planner.logs, runner)
    for job, job_id in zip(jobs, ids):
        echo(f"submitted {job_id}: stage '{job.label}'")
    echo(f"logs: {planner.logs}/   watch: squeue --me   details: scontrol show job {ids[-1]}")
    return ids
