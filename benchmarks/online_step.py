"""Seconds per online training step, split into MR rollouts, TRL's own sampling of the completions, and the rest
(log-probabilities, loss, backward, optimizer); and the same step with a free reward, side by side.

Each stage kind is built in this process exactly as `collab train`'s ranks build it
(`collab.train.rank_main.build_stage_trainer`) and trained for a few steps; a callback times every step, the reward
function times its MR call (`mr/seconds`), and TRL's `_generate` is wrapped to time the sampling. Also counted per
step: MR's policy requests and engine calls. The task set, the user and the reward (window, samples, turn length)
come from `--recipe` (default: recipes/quickstart-online.yaml), and so do the model, the batch and the completion
length of its online stage, unless a flag says otherwise.

Unless `--no-free` is given, each kind is then trained a second time, in the same process and from the same seed,
with MR's scoring replaced by a free reward (minus the completion's length): everything else of the step (sampling,
log-probabilities, loss, backward, the reward function's bookkeeping) is the same code, so the ratio of the two
step times is what having MR in the loop costs.

    python -m benchmarks.online_step [--recipe recipes/quickstart-online.yaml] [--model M] \
        [--kinds online_dpo,grpo,rloo] [--steps 3] [--prompts B] [--generations 2] [--tokens T] [--window w] \
        [--samples S] [--turn-tokens N] [--no-free]

Run with one thread per process on a shared machine (`OMP_NUM_THREADS=1`): spinning threads slow everything down.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine


def stage_trainer_args(kind: str, a: argparse.Namespace) -> dict[str, Any]:
    common = {"max_steps": a.steps, "save_strategy": "no", "logging_steps": 1, "gradient_checkpointing": False,
              "learning_rate": 1e-5, "report_to": "none"}
    if kind == "online_dpo":  # two completions per prompt, by construction
        return {**common, "per_device_train_batch_size": a.prompts, "max_new_tokens": a.tokens, "max_length": 1024}
    return {**common, "per_device_train_batch_size": a.prompts * a.generations, "num_generations": a.generations,
            "max_completion_length": a.tokens}


def free_score(candidates: list[Any], seed: int | None = None) -> list[Any]:
    """A reward that costs nothing: minus the completion's length in characters (no rollouts, no ties)."""
    from collab.reward import MRResult

    return [MRResult(mr=-len(c.text) / 100.0) for c in candidates]


def run_kind(kind: str, a: argparse.Namespace, root: Path, *, free: bool = False) -> dict[str, Any]:
    from transformers import TrainerCallback

    from collab.config import load_recipe, validate_recipe
    from collab.run.record import open_run
    from collab.train.rank_main import build_stage_trainer

    base = load_recipe(a.recipe)
    reward = {**base.reward.model_dump(), "window": a.window, "samples": a.samples,
              "policy_max_new_tokens": a.turn_tokens}
    recipe = validate_recipe({
        "name": f"bench-{kind}", "output_dir": str(root / f"{kind}-{'free' if free else 'mr'}"), "seed": 0,
        "model": {"name": a.model}, "tasks": {"name": base.tasks.name, "limit": a.prompts * a.steps},
        "simulator": base.simulator.model_dump(), "reward": reward,
        "stages": [{"kind": kind, "trainer": stage_trainer_args(kind, a)}],
    })
    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            step_times.append(time.perf_counter() - self.started)

    open_run(recipe, recipe.run_dir)
    trainer, _, _ = build_stage_trainer(recipe, recipe.stages[0], recipe.run_dir,  # type: ignore[arg-type]
                                        callbacks=[StepTimer()])
    sampling: list[float] = []
    generate = trainer._generate

    @functools.wraps(generate)
    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            sampling.append(time.perf_counter() - started)

    trainer._generate = timed_generate
    reward = trainer.mr_reward
    if free:
        reward.reward.score = free_score
    mr_calls: list[dict[str, float]] = []
    drain = reward.drain
    reward.drain = lambda gather=None: mr_calls.append(drain(gather)) or mr_calls[-1]  # keep what each log drained
    trainer.train()
    engine = reward.reward.engine.stats
    policy = reward.reward.policy.stats
    skip = 1 if len(step_times) > 1 else 0  # the first step pays one-time costs
    steps = step_times[skip:]
    mr = [m["mr/seconds"] for m in mr_calls if "mr/seconds" in m][skip:]
    sampled = sampling[skip:]
    rates = [m["mr/truncated_rate"] for m in mr_calls if "mr/truncated_rate" in m]
    completions = a.prompts * (2 if kind == "online_dpo" else a.generations)
    n = len(step_times)
    return {"kind": kind, "free": free, "completions": completions, "step_s": sum(steps) / len(steps),
            "mr_s": sum(mr) / max(1, len(mr)), "sampling_s": sum(sampled) / max(1, len(sampled)),
            "policy_requests": policy.requests / n, "policy_calls": engine.policy_calls / n,
            "simulator_calls": engine.simulator_calls / n,
            "truncated": sum(rates) / max(1, len(rates))}


def resolve_defaults(a: argparse.Namespace) -> None:
    """Flags not given take the recipe's values: its model (when on disk), its online stage's batch and completion
    length, its reward's window, samples and turn length."""
    from collab.config import TrainerStage, load_recipe
    from collab.stages.kinds import KINDS

    recipe = load_recipe(a.recipe)
    online = next((s for s in recipe.stages if isinstance(s, TrainerStage) and KINDS[s.kind].online), None)
    trainer = online.trainer if online is not None else {}
    if a.model is None:
        a.model = recipe.model.name if Path(recipe.model.name).is_dir() else "smollm2-135m-instruct"
    if a.prompts is None:
        a.prompts = trainer.get("per_device_train_batch_size", 2)
    if a.tokens is None:
        a.tokens = trainer.get("max_new_tokens") or trainer.get("max_completion_length", 128)
    if a.window is None:  # --window 0 (no rollouts) is a valid choice
        a.window = recipe.reward.window
    if a.samples is None:
        a.samples = recipe.reward.samples
    if a.turn_tokens is None:
        a.turn_tokens = recipe.reward.policy_max_new_tokens


def share(seconds: float, step: float) -> str:
    return f"{seconds:.1f} s ({100 * seconds / step:.0f}%)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/quickstart-online.yaml",
                        help="the task set, user and reward (window, samples, turn length) come from this recipe")
    parser.add_argument("--model", default=None,
                        help="default: the recipe's model when it is on disk (the quickstart's trained one), else "
                        "smollm2-135m-instruct")
    parser.add_argument("--kinds", default="online_dpo,grpo,rloo")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=None, help="B: prompts per step (default: the recipe's "
                        "online stage's per_device_train_batch_size)")
    parser.add_argument("--generations", type=int, default=2, help="G: completions per prompt (grpo, rloo)")
    parser.add_argument("--tokens", type=int, default=None, help="max tokens of a sampled completion (default: the "
                        "recipe's online stage's)")
    parser.add_argument("--window", type=int, default=None, help="w: future assistant turns (default: the recipe's)")
    parser.add_argument("--samples", type=int, default=None, help="S: rollouts per completion (default: the recipe's)")
    parser.add_argument("--turn-tokens", type=int, default=None,
                        help="max tokens of a future policy turn (default: the recipe's)")
    parser.add_argument("--no-free", dest="free", action="store_false",
                        help="skip the second run of each kind with a free reward")
    a = parser.parse_args()
    resolve_defaults(a)
    print(f"machine: {machine()}")
    print(f"model {a.model}; B={a.prompts} prompts, G={a.generations} (online_dpo: 2), {a.tokens} completion tokens, "
          f"S={a.samples}, w={a.window}, {a.turn_tokens} tokens per future turn; mean of steps 2..{a.steps}")
    rows: list[dict[str, Any]] = []
    free_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.kinds.split(","):
            rows.append(run_kind(kind, a, Path(tmp)))
            if a.free:
                free_rows.append(run_kind(kind, a, Path(tmp), free=True))
    print("| stage | completions/step | s/step | MR rollouts | TRL sampling | optimisation + rest | "
          "truncated | MR policy requests/step | MR engine steps (policy / simulator calls) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rest = r["step_s"] - r["mr_s"] - r["sampling_s"]
        print(f"| {r['kind']} | {r['completions']} | {r['step_s']:.1f} | {share(r['mr_s'], r['step_s'])} | "
              f"{share(r['sampling_s'], r['step_s'])} | {share(rest, r['step_s'])} | {100 * r['truncated']:.0f}% | "
              f"{r['policy_requests']:.1f} | {r['policy_calls']:.1f} / {r['simulator_calls']:.1f} |")

    if free_rows:
        print()
        print("| stage | s/step, MR | s/step, free reward | MR step / free step | TRL sampling, MR / free |")
        print("|---|---:|---:|---:|---:|")
        for r, f in zip(rows, free_rows):
            print(f"| {r['kind']} | {r['step_s']:.1f} | {f['step_s']:.1f} | {r['step_s'] / f['step_s']:.2f}x | "
                  f"{r['sampling_s']:.1f} / {f['sampling_s']:.1f} s |")


if __name__ == "__main__":
    main()
