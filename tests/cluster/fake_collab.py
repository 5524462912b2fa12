"""A stand-in for the `collab` command inside Slurm jobs: a counter loop that behaves like a preemptible stage.

The cluster mechanics tests put it first on PATH (as `collab`) and submit the real slurm/*.slurm scripts, so what
they prove is the scripts' behaviour, independent of how long real training takes:

- `collab train RECIPE --stage S [--set k=v ...]` continues from the counter saved in RUN_DIR/S/counter (0 when
  there is none), as the real command continues from the newest complete checkpoint; it writes the run
  directory's resolved recipe (the recipe's text plus one `# set k=v` line per override) and the overrides it ran
  with into RUN_DIR/S/overrides (one line per call), so a test sees what each start ran with.
  `collab resume RUN_DIR --stage S` continues from the counter too.
- Each step sleeps a little and appends the count to RUN_DIR/S/progress; after FAKE_STEPS steps it writes DONE.
- On SIGUSR1 or SIGTERM it saves the counter and exits 75 (EXIT_PREEMPTED), as the real trainer does.
- `collab data RECIPE --shard i/n` writes RUN_DIR/data/shard-i-of-n; `collab data merge RUN_DIR` lists the shards
  it found into RUN_DIR/data/merged and writes DONE.

Every call appends one line (command, stage, SLURM_RESTART_COUNT, COLLAB_ACCELERATE_ARGS) to RUN_DIR/calls.log.
It is Python, not bash, because the scripts start the step with USR1 ignored (so the launchers in between survive
it) and a shell cannot trap a signal that was ignored when it started; Python, like the real trainer, can.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

EXIT_PREEMPTED = 75


def run_dir_of(recipe: Path) -> Path:
    for line in recipe.read_text().splitlines():
        if line.startswith("output_dir:"):
            return Path(line.split(":", 1)[1].strip())
    raise SystemExit(f"fake collab: {recipe} has no output_dir")


def record(run_dir: Path, *fields: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    env = [
        f"restart={os.environ.get('SLURM_RESTART_COUNT', '0')}",
        f"accelerate_args={os.environ.get('COLLAB_ACCELERATE_ARGS', '')}",
        f"accelerate_config={os.environ.get('COLLAB_ACCELERATE_CONFIG', '')}",
    ]
    with open(run_dir / "calls.log", "a") as f:
        f.write(" | ".join([*fields, *env]) + "\n")


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def count(run_dir: Path, stage: str, start_fresh: bool) -> int:
    stage_dir = run_dir / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    saved = stage_dir / "counter"
    i = 0 if start_fresh or not saved.exists() else int(saved.read_text())
    steps = int(os.environ.get("FAKE_STEPS", "20"))
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while i < steps:
        if stop["now"]:
            tmp = saved.with_suffix(".tmp")
            tmp.write_text(str(i))
            tmp.replace(saved)
            with open(stage_dir / "progress", "a") as f:
                f.write(f"saved {i}\n")
            return EXIT_PREEMPTED
        time.sleep(float(os.environ.get("FAKE_STEP_S", "0.25")))
        i += 1
        with open(stage_dir / "progress", "a") as f:
            f.write(f"{i}\n")
    (stage_dir / "DONE").write_text("")
    return 0


def main(args: list[str]) -> int:
    command = args[0]
    if command == "train":
        recipe = Path(args[1])
        run_dir = run_dir_of(recipe)
        stage = option(args, "--stage")
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        record(run_dir, "train", stage, " ".join(args[4:]))
        (run_dir / "recipe.resolved.yaml").write_text(recipe.read_text() + "".join(f"# set {o}\n" for o in overrides))
        (run_dir / stage).mkdir(parents=True, exist_ok=True)
        with open(run_dir / stage / "overrides", "a") as f:
            f.write(" ".join(overrides) + "\n")
        return count(run_dir, stage, start_fresh=False)
    if command == "resume":
        run_dir = Path(args[1])
        stage = option(args, "--stage")
        record(run_dir, "resume", stage)
        return count(run_dir, stage, start_fresh=False)
    if command == "data" and args[1] == "merge":
        run_dir = Path(args[2])
        record(run_dir, "merge")
        shards = sorted(p.name for p in (run_dir / "data").glob("shard-*"))
        (run_dir / "data" / "merged").write_text("\n".join(shards) + "\n")
        (run_dir / "data" / "DONE").write_text("")
        return 0
    if command == "data":
        run_dir = run_dir_of(Path(args[1]))
        shard = option(args, "--shard")
        record(run_dir, "data", shard)
        time.sleep(float(os.environ.get("FAKE_SHARD_S", "1")))
        index, total = shard.split("/")
        (run_dir / "data").mkdir(parents=True, exist_ok=True)
        (run_dir / "data" / f"shard-{index}-of-{total}").write_text(f"{time.time()}\n")
        return 0
    print(f"fake collab: unexpected arguments {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
