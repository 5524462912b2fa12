"""The `collab` command. Thin: it parses arguments, loads the recipe and calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from collab.errors import CollabError

if TYPE_CHECKING:  # imported for annotations only: `collab --help` stays fast
    from rich.console import Console

    from collab.config import Recipe
    from collab.preflight import MemoryCheck


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path to a recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value by dotted path, e.g. --set reward.window=3 (repeatable)")
    p.add_argument("--tasks", default=None, metavar="NAME|PATH.jsonl",
                   help="task set: a registered name or a JSONL file of task records (same as --set tasks.name=...)")


def _add_preflight_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-preflight", dest="preflight", action="store_false",
                   help="skip the checks of endpoint variables and packages (task files are still loaded); for "
                   "when the compute nodes' environment differs from this machine's")


def _overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides) + ([f"tasks.name={args.tasks}"] if getattr(args, "tasks", None) else [])


def _recipe(args: argparse.Namespace) -> Recipe:
    from collab.config import load_recipe

    return load_recipe(args.recipe, _overrides(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collab", description="Train LLMs to lead conversations.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    recipes = sub.add_parser("recipes", help="list or validate recipes")
    rsub = recipes.add_subparsers(dest="action", required=True, metavar="ACTION")
    rsub.add_parser("list", help="list the shipped recipes")
    validate = rsub.add_parser(
        "validate", help="validate recipe files and run the pre-flight checks (task files, endpoint variables, "
        "packages); without paths, only the schema of every shipped recipe")
    validate.add_argument("paths", nargs="*")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--tasks", default=None, metavar="NAME|PATH.jsonl", help="task set name or JSONL file")
    _add_preflight_arg(validate)
    from collab.plan.options import add_gpu_memory_argument

    add_gpu_memory_argument(validate)
    show = rsub.add_parser("show", help="print a recipe fully resolved (defaults and overrides applied)")
    _add_recipe_args(show)
    explain = rsub.add_parser(
        "explain", help="what a recipe key means: type, default and description (e.g. reward.window, "
        "stages.dpo.trainer); without a key, the top-level keys")
    explain.add_argument("key", nargs="?", default="")
    explain.add_argument("--write-reference", metavar="FILE.md", type=Path, default=None,
                         help="rewrite the generated reference of every key in FILE.md (docs/recipes.md)")

    models = sub.add_parser("models", help="prepare models")
    msub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = msub.add_parser("prepare", help="convert the embedded model once into the cache and report timings")
    prepare.add_argument("name", nargs="?", default="smollm2-135m-instruct")

    tasks = sub.add_parser("tasks", help="list or export task sets")
    tsub = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("list", help="list the registered task sets")
    export = tsub.add_parser("export", help="write a task set as JSONL (a starting point for your own)")
    export.add_argument("name")
    export.add_argument("--split", default="train")
    export.add_argument("--limit", type=int, default=None)
    export.add_argument("--out", required=True)

    data = sub.add_parser(
        "data", help="MR-guided conversation synthesis (`collab data RECIPE`, `collab data merge RUN_DIR`)",
        description="Run a recipe's data stage (resumable; --shard i/n for data-parallel workers), or merge the "
        "shards of a run directory into datasets with `collab data merge RUN_DIR`.",
    )
    data.add_argument("target", nargs="+", metavar="RECIPE | merge RUN_DIR")
    data.add_argument("--stage", default=None, help="name of the data stage (default: the first one)")
    data.add_argument("--shard", default="0/1", help="this worker's shard, i/n (default 0/1: everything)")
    data.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    data.add_argument("--tasks", default=None, metavar="NAME|PATH.jsonl", help="task set name or JSONL file")

    simulate = sub.add_parser("simulate", help="show one conversation and the MR of a few candidate responses")
    _add_recipe_args(simulate)
    simulate.add_argument("--task-index", type=int, default=0)
    simulate.add_argument("--candidates", type=int, default=4)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--show-rollouts", action="store_true",
                          help="print the future turns (every rollout) behind each candidate's MR")

    # collab eval: collab.evaluate
    ev = sub.add_parser("eval", help="evaluate models in simulated conversations; report metrics with bootstrap CIs",
                        description="An eval stage built from flags (collab.evaluate.command); a flag not given "
                        "keeps the recipe default named in its help.")
    ev.add_argument("--model", dest="models", action="append", required=True, metavar="MODEL",
                    help="model name, checkpoint or LoRA adapter directory, or openai:MODEL@BASE_URL (repeatable)")
    ev.add_argument("--tasks", required=True, help="registered task set or path to a .jsonl task file")
    ev.add_argument("--split", help="split of the task set (default: tasks.eval_split, test)")
    ev.add_argument("--limit", type=int, help="number of tasks (default: all)")
    ev.add_argument("--task-seed", type=int, help="seed of generated task sets (default: tasks.seed, 0)")
    ev.add_argument("--runs", type=int, help="conversations per task, with different seeds (default: 1)")
    ev.add_argument("--simulator", choices=["sharded", "llm"], help="the simulated user (default: sharded)")
    ev.add_argument("--simulator-model", help="the model playing the user (--simulator llm): a name or "
                    "openai:MODEL@BASE_URL")
    ev.add_argument("--user-mode", choices=["reveal", "withhold"],
                    help="sharded user: reveal (Lost in Conversation; default) or withhold (facts only to questions "
                    "about them)")
    ev.add_argument("--give-up", type=float,
                    help="sharded user in withhold mode: probability of ending after a wrong answer (default: 0)")
    ev.add_argument("--recap", action="store_true", default=None,
                    help="sharded user: restate the whole request once the last withheld fact is out")
    ev.add_argument("--system-prompt", help="system prompt text, or a named one: proactive, ask, answer")
    ev.add_argument("--mode", choices=["sharded", "full", "concat"], help="Lost-in-Conversation mode (default: "
                    "sharded)")
    ev.add_argument("--max-turns", type=int,
                    help="assistant turns after which a conversation stops (default: simulator.max_turns, 7)")
    ev.add_argument("--max-new-tokens", type=int,
                    help="longest assistant turn (default: reward.policy_max_new_tokens, 256)")
    ev.add_argument("--temperature", type=float,
                    help="sampling temperature of the assistant (default: reward.policy_temperature, 0.7)")
    ev.add_argument("--batch-size", type=int,
                    help="conversations advanced and saved together (default: policy.max_batch_size, 96)")
    ev.add_argument("--seed", type=int, help="seed of the conversations and the bootstrap (default: 0)")
    ev.add_argument("--resamples", type=int, help="bootstrap resamples (default: 2000)")
    ev.add_argument("--mr", action="store_true",
                    help="also report mr, the conversation-level R* (default reward settings)")
    ev.add_argument("--wandb", choices=["disabled", "offline", "online"],
                    help="W&B mode (default: disabled; WANDB_MODE, when set, overrides it as for every stage)")
    ev.add_argument("--out", required=True, help="output folder (rerunning into it resumes)")

    # collab launch: collab.launch
    launch = sub.add_parser("launch", help="submit a recipe's stages to a cluster (Slurm); see docs/cluster.md")
    lsub = launch.add_subparsers(dest="action", required=True, metavar="SCHEDULER")
    slurm = lsub.add_parser("slurm", help="sbatch the recipe's stages as requeueable, chained jobs")
    _add_recipe_args(slurm)
    slurm.add_argument("--nodes", type=int, required=True, help="training nodes (a vLLM server node comes on top)")
    slurm.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node; 0 runs on CPUs")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", default=None, help="time limit of each job, e.g. 4:00:00 or 2-00:00:00")
    slurm.add_argument("--stage", default=None, help="submit only this stage (default: every unfinished one, chained)")
    slurm.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per node task (default 8 per GPU)")
    slurm.add_argument("--shards", type=int, default=None, help="array tasks of a data stage (default --nodes)")
    slurm.add_argument("--signal-s", type=int, default=600,
                       help="seconds before the time limit at which jobs save and requeue (default 600)")
    slurm.add_argument("--port", type=int, default=None, help="rendezvous port (default: derived from the job id)")
    slurm.add_argument("--vllm-tp", type=int, default=None,
                       help="tensor parallel size of the vLLM server node (default: all its GPUs, data parallel 1)")
    slurm.add_argument("--scale-batch", action="store_true",
                       help="keep each stage's effective_batch_size on this many GPUs by adjusting "
                       "gradient_accumulation_steps (default: refuse a launch that would change it)")
    slurm.add_argument("--sbatch-arg", dest="sbatch_args", action="append", default=[], metavar="OPTION",
                       help="extra sbatch option, e.g. --sbatch-arg=--account=myproj (repeatable)")
    slurm.add_argument("--dry-run", action="store_true", help="print the sbatch commands instead of submitting")
    _add_preflight_arg(slurm)
    add_gpu_memory_argument(slurm)
    # collab train, collab resume: collab.stages.pipeline
    train = sub.add_parser("train", help="run a recipe's stages in order (skipping finished ones); see docs/training.md")
    _add_recipe_args(train)
    train.add_argument("--stage", default=None, help="run only this stage (its inputs must be finished)")
    train.add_argument("--restart-from", default=None, metavar="STAGE",
                       help="run this stage and the later ones again under the recipe's (changed) settings; their "
                       "old folders are moved to RUN_DIR/replaced/")
    resume = sub.add_parser("resume", help="continue a run directory from its first unfinished stage's last checkpoint")
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run's output_dir (holds recipe.resolved.yaml)")
    resume.add_argument("--stage", default=None, help="resume only this stage")
    # collab plan: collab.plan
    from collab.plan.options import add_plan_arguments

    plan = sub.add_parser("plan", help="count the LLM calls, tokens, API cost and GPU-hours of a recipe's stages "
                          "without running them")
    _add_recipe_args(plan)
    add_plan_arguments(plan)
    _add_preflight_arg(plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    from collab.interrupt import EXIT_INTERRUPTED, Interrupted

    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except CollabError as e:
        print(f"collab: error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"collab: {e}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"collab: interrupted. {_RESUME_HINT.get(args.command, '')}".rstrip(), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


# What a command interrupted outside a stage of `collab train` keeps, and how to continue it.
_RESUME_HINT = {
    "data": "The scored turns are saved in the stage's store/; run the same command again to continue.",
    "eval": "Finished conversations are saved in --out; run the same command again to continue.",
    "train": "Continue with `collab resume RUN_DIR`.",
    "resume": "Continue with `collab resume RUN_DIR`.",
}


def _dispatch(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if args.command == "recipes":
        from collab import config

        if args.action == "list":
            root = config.recipes_root()
            for path in sorted(root.rglob("*.yaml")):
                console.print(str(path.relative_to(root.parent)))
            return 0
        if args.action == "show":
            console.print(config.dump_recipe(_recipe(args)), markup=False)
            return 0
        if args.action == "explain":
            from collab.config import explain

            if args.write_reference is not None:
                changed = explain.write_reference(args.write_reference)
                console.print(f"{args.write_reference}: {'updated' if changed else 'already up to date'}")
                return 0
            console.print(explain.render(explain.explain(args.key)), markup=False, highlight=False, soft_wrap=True)
            return 0
        from collab import preflight
        from collab.plan.options import gpu_memory_gb

        paths = [Path(p) for p in args.paths] or sorted(config.recipes_root().rglob("*.yaml"))
        memory = preflight.MemoryCheck(gpu_memory_gb(args))
        failures = 0
        for path in paths:
            try:
                recipe = config.load_recipe(path, _overrides(args))
                if args.paths:
                    notes = preflight.check(recipe, str(path), environment=args.preflight, memory=memory)
                else:  # the shipped recipes are templates: their endpoints and task sets are the user's, not their GPUs
                    notes = _memory_check(recipe, str(path), memory)
                console.print(f"[green]ok[/green]   {path}")
                for note in notes:
                    console.print(f"     note: {note}", markup=False, highlight=False)
            except CollabError as e:
                failures += 1
                console.print("[red]FAIL[/red] ", end="")
                console.print(str(e), markup=False, highlight=False, soft_wrap=True)
        if failures:
            raise CollabError(f"{failures} of {len(paths)} recipes are invalid (see above)")
        return 0
    if args.command == "models":
        import time

        from collab.models import embedded_model_dir, load_model

        start = time.perf_counter()
        path = embedded_model_dir(args.name)
        converted = time.perf_counter() - start
        start = time.perf_counter()
        load_model(args.name, device="cpu")
        console.print(f"{args.name}: {path} (prepared in {converted:.1f} s, loaded in {time.perf_counter() - start:.1f} s)")
        return 0
    if args.command == "tasks":
        from collab.tasks.jsonl import write_tasks_jsonl
        from collab.tasks.registry import list_task_sets, load_task_set

        if args.action == "list":
            for name in list_task_sets():
                console.print(name)
            return 0
        tasks = load_task_set(args.name, split=args.split, limit=args.limit)
        write_tasks_jsonl(args.out, tasks)
        console.print(f"wrote {len(tasks)} tasks to {args.out}")
        return 0
    if args.command == "data":
        from collab.backends.cache import CACHE_FILE, merge_shards
        from collab.data.engine import Shard
        from collab.data.stage import data_stage_of, merge_data_stage, run_data_stage
        from collab.run.record import load_run, open_run

        if args.target[0] == "merge":
            if len(args.target) != 2:
                raise CollabError("usage: collab data merge RUN_DIR")
            run_dir = Path(args.target[1])
            recipe = load_run(run_dir)
            out = merge_data_stage(recipe, data_stage_of(recipe, args.stage), run_dir)
            merge_shards(run_dir / CACHE_FILE)  # the array tasks' per-writer cache files (network filesystems)
        else:
            if len(args.target) != 1:
                raise CollabError(f"unexpected arguments {args.target[1:]}", fix="write `collab data RECIPE [options]`.")
            args.recipe = args.target[0]
            recipe = _recipe(args)
            run_dir = recipe.run_dir
            open_run(recipe, run_dir)
            stage = data_stage_of(recipe, args.stage)
            try:
                out = run_data_stage(recipe, stage, run_dir, Shard.parse(args.shard))
            except KeyboardInterrupt:
                from collab.interrupt import Interrupted, saved_state

                raise Interrupted(f"interrupted during data stage '{stage.label}': "
                                  f"{saved_state(run_dir, stage.label, 'data')}. Run the same command again to "
                                  "continue.") from None
        console.print(f"data stage output: {out}")
        return 0
    if args.command == "simulate":
        from collab.simulate import render, simulate

        recipe = _recipe(args)
        progress = Console(stderr=True)
        report = simulate(recipe, task_index=args.task_index, candidates=args.candidates, seed=args.seed,
                          console=progress)
        render(report, console, show_rollouts=args.show_rollouts)
        return 0
    # collab eval: collab.evaluate
    if args.command == "eval":
        return _eval_command(args, console)
    # collab launch: collab.launch
    if args.command == "launch":
        from collab.launch.slurm import SlurmOptions, launch_slurm

        options = SlurmOptions(
            nodes=args.nodes, gpus_per_node=args.gpus_per_node, partition=args.partition, time=args.time,
            cpus_per_task=args.cpus_per_task, stage=args.stage, shards=args.shards, signal_s=args.signal_s,
            port=args.port, vllm_tp=args.vllm_tp, scale_batch=args.scale_batch,
            sbatch_args=tuple(args.sbatch_args),
        )
        _launch_preflight(args)
        launch_slurm(args.recipe, _overrides(args), options, dry_run=args.dry_run, echo=print)
        return 0
    # collab train, collab resume: collab.stages.pipeline
    if args.command in ("train", "resume"):
        from collab.stages import pipeline

        if args.command == "train":
            run_dir = pipeline.train(_recipe(args), stage=args.stage, restart_from=args.restart_from)
        else:
            run_dir = pipeline.resume(args.run_dir, stage=args.stage)
        console.print(f"run directory: {run_dir}", markup=False, highlight=False)
        return 0
    # collab plan: collab.plan
    if args.command == "plan":
        from collab.plan import TaskCounts, plan_recipe
        from collab.plan.options import assumptions_from_args, is_cpu_recipe
        from collab.plan.render import render

        tokens, throughput = assumptions_from_args(args)
        recipe = _recipe(args)
        _plan_preflight(args, recipe, throughput.gpu_memory_gb)
        render(plan_recipe(recipe, stage=args.stage, tokens=tokens, throughput=throughput,
                           tasks=TaskCounts(train=args.tasks_count, eval=args.eval_tasks_count)), console,
               cpu=is_cpu_recipe(recipe) and args.assume_gpus is None)
        return 0
    raise AssertionError(args.command)


def _memory_check(recipe: Recipe, source: str, memory: MemoryCheck) -> list[str]:
    """Only the vLLM engines' memory (no task sets, no environment), as one pre-flight report."""
    from collab import preflight

    problems = memory.problems(recipe)
    if problems:
        raise CollabError(preflight.report(problems, source))
    return memory.notes(recipe)


def _launch_preflight(args: argparse.Namespace) -> None:
    """Check the stages about to be submitted (the unfinished ones, or --stage) before sbatch."""
    from collab import preflight
    from collab.plan.options import gpu_memory_gb
    from collab.run.layout import StagePaths

    recipe = _recipe(args)
    if args.stage is not None:
        recipe.stage(args.stage)  # an unknown name lists the valid ones
    stages = [args.stage] if args.stage else [s.label for s in recipe.stages
                                              if not StagePaths(recipe.run_dir, s.label).is_done()]
    memory = preflight.MemoryCheck(gpu_memory_gb(args), gpus_per_node=args.gpus_per_node or None)
    for note in preflight.check(recipe, args.recipe, stages, environment=args.preflight, memory=memory):
        print(f"collab: note: {note}", file=sys.stderr)


def _plan_preflight(args: argparse.Namespace, recipe: Recipe, gpu_memory_gb: float) -> None:
    """A plan needs the task sets (it counts them); the endpoints and packages only warn, because a plan is how
    one prices a run before setting them up."""
    from collab import preflight

    stages = [args.stage] if args.stage else None
    if args.stage is not None:
        recipe.stage(args.stage)
    # Registered sets are counted by the planner itself (or given by tasks.limit): a hub set needs no download here.
    # The vLLM engines that could not be checked are in the plan's engine table.
    preflight.check(recipe, args.recipe, stages, environment=False, files_only=True,
                    memory=preflight.MemoryCheck(gpu_memory_gb))
    problems = preflight.environment_problems(recipe, stages) if args.preflight else []
    if problems:
        print("collab: warning: " + preflight.report(problems, args.recipe).rstrip(), file=sys.stderr)


def _eval_command(args: argparse.Namespace, console: Console) -> int:
    from collab.evaluate.command import run_eval_command
    from collab.evaluate.report import render_markdown

    out = Path(args.out)
    results = run_eval_command(vars(args), out, echo=lambda line: console.print(line, markup=False, highlight=False))
    console.print(render_markdown(results), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {out}/results.json, report.md, report.html, conversations.jsonl")
    return 0



if __name__ == "__main__":
    sys.exit(main())
