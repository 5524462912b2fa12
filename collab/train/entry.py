"""The script `accelerate launch` runs for a trainer stage (sft, dpo, online_dpo, grpo, rloo):

    accelerate launch --config_file accelerate_configs/cpu.yaml -m collab.train.entry --run-dir RUN --stage NAME

It reads the stage from RUN/recipe.resolved.yaml (so every process, on every node, sees the same recipe), installs
the SIGUSR1/SIGTERM handlers first, and trains. Exit codes: 0 the stage finished (final/ and DONE written),
2 a problem the user can fix (message on stderr), 75 (`EXIT_PREEMPTED`) stopped by a signal after saving a
checkpoint: requeue and continue with `collab resume RUN`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collab.errors import CollabError
from collab.interrupt import EXIT_INTERRUPTED
from collab.train.preemption import EXIT_PREEMPTED, PreemptionFlag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m collab.train.entry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--stage", required=True, help="the stage's name in the resolved recipe")
    args = parser.parse_args(argv)

    flag = PreemptionFlag()
    flag.install()  # before the slow imports: a signal that arrives while loading still stops at the first step
    try:
        from collab.config import TrainerStage, load_recipe
        from collab.run.layout import RESOLVED_RECIPE
        from collab.train.worker import summary, train_stage

        resolved = args.run_dir / RESOLVED_RECIPE
        if not resolved.is_file():
            raise CollabError(f"{args.run_dir} is not a run directory (no {RESOLVED_RECIPE})",
                              fix="start stages with `collab train RECIPE`, which writes it.")
        recipe = load_recipe(resolved)
        stage = recipe.stage(args.stage)
        if not isinstance(stage, TrainerStage):
            raise CollabError(f"stage '{args.stage}' is a {stage.kind} stage, not a trainer stage")  # type: ignore[attr-defined]
        outcome = train_stage(recipe, stage, args.run_dir, flag)
    except CollabError as e:
        print(f"collab: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        # collab (the parent) reports what was saved; a traceback here would only repeat it in train.log.
        print(f"collab: stage '{args.stage}' interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(f"collab: stage '{args.stage}': {summary(outcome)}", flush=True)
    return EXIT_PREEMPTED if outcome.preempted else 0


if __name__ == "__main__":
    sys.exit(main())
