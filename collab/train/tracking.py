"""W&B tracking of training stages.

- Mode: `recipe.tracking.wandb` (`online`, `offline`, `disabled`), unless the WANDB_MODE environment variable is
  set, which wins (so a cluster can force `offline` without editing recipes).
- Files: `<run_dir>/wandb/` (offline runs in `offline-run-*/`, to `wandb sync` later).
- Identity: one W&B run per stage. Its id is generated once and stored in `<run>/<stage>/wandb_id`; every launch of
  the stage (first start, restarts after preemption) uses it with WANDB_RUN_ID and WANDB_RESUME=allow, so an online
  run continues its charts. (Offline mode writes one `offline-run-*` folder per launch, all with that id;
  `wandb sync` appends them to the same run.)
- What is logged: the Trainer's metrics (TRL's loss, rewards/margins, ... through `report_to=["wandb"]`), the
  statistics of the training data from `<data stage>/stats.json` (run config `data_stats` and summary
  `data/...`), and a `data/samples` table of training rows with their MR scores, on the first launch.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.io import temp_file_beside
from collab.run.layout import StagePaths

MODES = ("online", "offline", "disabled")
SAMPLE_ROWS = 16


def wandb_mode(recipe: Recipe, environ: dict[str, str] | None = None) -> str:
    """The effective mode: WANDB_MODE when set (`dryrun` counts as offline), else the recipe's."""
    return effective_mode(recipe.tracking.wandb, environ)


def effective_mode(configured: str, environ: dict[str, str] | None = None) -> str:
    """WANDB_MODE when it names a mode (`dryrun` counts as offline), else `configured`."""
    env = os.environ if environ is None else environ
    mode = (env.get("WANDB_MODE") or "").strip().lower()
    if mode == "dryrun":
        mode = "offline"
    return mode if mode in MODES else configured


def tracking_enabled(recipe: Recipe, environ: dict[str, str] | None = None) -> bool:
    return wandb_mode(recipe, environ) != "disabled"


def ensure_run_id(paths: StagePaths) -> str:
    """The stage's W&B run id: read from `wandb_id`, or generated and stored there exactly once.

    Creation is race-free (processes on several nodes may start the stage at once): the id is written to a
    temporary file and hard-linked into place, which fails if another process got there first; then the file is read.
    """
    path = paths.wandb_id
    if not path.is_file():
        fd, tmp = temp_file_beside(path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(4) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


def run_name(recipe: Recipe, stage: TrainerStage) -> str:
    return f"{recipe.name}/{stage.label}"


def wandb_env(recipe: Recipe, stage: TrainerStage, run_dir: Path) -> dict[str, str]:
    """Environment for the launched trainer: run id, resume, mode, project and where the files go."""
    mode = wandb_mode(recipe)
    env = {"WANDB_MODE": mode}
    if mode == "disabled":
        return env
    env.update({
        "WANDB_RUN_ID": ensure_run_id(StagePaths(run_dir, stage.label)),
        "WANDB_RESUME": "allow",
        "WANDB_DIR": str(run_dir.resolve()),
        "WANDB_PROJECT": recipe.tracking.project,
        "WANDB_NAME": run_name(recipe, stage),
    })
    if recipe.tracking.entity:
        env["WANDB_ENTITY"] = recipe.tracking.entity
    if recipe.tracking.tags:
        env["WANDB_TAGS"] = ",".join(recipe.tracking.tags)
    return env


def read_data_stats(run_dir: Path, stage: TrainerStage) -> dict[str, Any] | None:
    """`<data_from>/stats.json` of the stage's data, if there is one."""
    if not stage.data_from:
        return None
    try:
        stats = json.loads((run_dir / stage.data_from / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) else None


def flatten_numbers(data: dict[str, Any], prefix: str) -> dict[str, float]:
    """`{"pairs": {"train": 3}}` -> `{"<prefix>/pairs/train": 3}`; numbers only (None and strings are left out)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(flatten_numbers(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def _text(messages: Any) -> str:
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return "" if messages is None else str(messages)
    return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in messages if isinstance(m, dict))


def sample_rows(kind: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the `data/samples` table: DPO pairs with both MRs and the gap, or SFT conversations."""
    if kind == "dpo":
        columns = ["conv_id", "turn", "prompt", "chosen", "rejected", "chosen_mr", "rejected_mr", "gap"]
        data = [[r.get("conv_id"), r.get("turn"), _text(r.get("prompt")), _text(r.get("chosen")),
                 _text(r.get("rejected")), r.get("chosen_mr"), r.get("rejected_mr"), r.get("gap")] for r in rows]
    else:
        columns = ["conv_id", "turn", "conversation", "mr"]
        data = [[r.get("conv_id"), r.get("turn"), _text(r.get("messages")), r.get("mr")] for r in rows]
    return columns, data


def start_run(
    recipe: Recipe,
    stage: TrainerStage,
    run_dir: Path,
    *,
    samples: list[dict[str, Any]],
    first_launch: bool,
) -> Any | None:
    """Open the stage's W&B run in this (main) process before the Trainer does, so it uses our id, folder and mode;
    transformers' WandbCallback then logs into it. Returns the run, or None when tracking is disabled."""
    mode = wandb_mode(recipe)
    if mode == "disabled":
        return None
    import wandb

    stats = read_data_stats(run_dir, stage)
    try:
        run = _init(wandb, recipe, stage, run_dir, mode, stats)
    except Exception as e:  # noqa: BLE001 -- no credentials, no network, a rejected entity or project
        raise CollabError(
            f"W&B could not start the run of stage '{stage.label}' in {mode} mode: {e}",
            fix="log in (`wandb login` or WANDB_API_KEY), or track offline with WANDB_MODE=offline and `wandb sync` "
            f"{run_dir / 'wandb'} later, or set tracking.wandb: disabled.",
        ) from None
    if stats:
        for key, value in flatten_numbers(stats, "data").items():
            run.summary[key] = value
    if first_launch and samples:
        columns, data = sample_rows(stage.kind, samples[:SAMPLE_ROWS])
        run.log({"data/samples": wandb.Table(columns=columns, data=data)})
    return run


def _init(wandb: Any, recipe: Recipe, stage: TrainerStage, run_dir: Path, mode: str,
          stats: dict[str, Any] | None) -> Any:
    return wandb.init(
        project=recipe.tracking.project,
        entity=recipe.tracking.entity,
        tags=recipe.tracking.tags or None,
        name=run_name(recipe, stage),
        id=ensure_run_id(StagePaths(run_dir, stage.label)),
        resume="allow",
        mode=mode,
        dir=str(run_dir.resolve()),
        config={"recipe": recipe.model_dump(mode="json"), "stage": stage.label, "data_stats": stats},
        allow_val_change=True,
    )


def finish_run(run: Any | None, *, preempted: bool) -> None:
    if run is None:
        return
    if preempted:
        run.mark_preempting()
    run.finish()
