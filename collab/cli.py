"""The `collab` command. Thin: it parses arguments, loads the recipe and calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collab.errors import CollabError


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path to a recipe YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value by dotted path, e.g. --set reward.window=3 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collab", description="Train LLMs to lead conversations.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    recipes = sub.add_parser("recipes", help="list or validate recipes")
    rsub = recipes.add_subparsers(dest="action", required=True, metavar="ACTION")
    rsub.add_parser("list", help="list the shipped recipes")
    validate = rsub.add_parser("validate", help="validate recipe files (all shipped ones when none are given)")
    validate.add_argument("paths", nargs="*")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show = rsub.add_parser("show", help="print a recipe fully resolved (defaults and overrides applied)")
    _add_recipe_args(show)

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

    simulate = sub.add_parser("simulate", help="show one conversation and the MR of a few candidate responses")
    _add_recipe_args(simulate)
    simulate.add_argument("--task-index", type=int, default=0)
    simulate.add_argument("--candidates", type=int, default=4)
    simulate.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except CollabError as e:
        print(f"collab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("collab: interrupted; everything already computed is saved.", file=sys.stderr)
        return 130


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
            console.print(config.dump_recipe(config.load_recipe(args.recipe, args.overrides)), markup=False)
            return 0
        paths = [Path(p) for p in args.paths] or sorted(config.recipes_root().rglob("*.yaml"))
        failures = 0
        for path in paths:
            try:
                config.load_recipe(path, args.overrides)
                console.print(f"[green]ok[/green]   {path}")
            except CollabError as e:
                failures += 1
                console.print(f"[red]FAIL[/red] {e}", markup=True, highlight=False)
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
    if args.command == "simulate":
        from collab.config import load_recipe
        from collab.simulate import render, simulate

        recipe = load_recipe(args.recipe, args.overrides)
        render(simulate(recipe, task_index=args.task_index, candidates=args.candidates, seed=args.seed), console)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
