"""The prompts an online stage (online_dpo, grpo, rloo) trains on: conversation states that end with a user turn.

One row per state, with the columns the MR reward function reads back (TRL passes every dataset column to it):

    prompt    the policy's messages: the recipe's system prompt (if any), then the transcript up to a user turn
    task_id   the id of the Task whose hidden goal the simulated user pursues (the reward looks the Task up by it)
    conv_id   where the state comes from: the task id for openings, the data stage's conversation id otherwise
    turn      the index of the assistant turn that answers the state (0 for openings)

Where the states come from:

- every task of the recipe's task set (`tasks.name`, `tasks.split`, `tasks.limit`) gives its opening state: the
  simulated user's first turn, seeded exactly as the data engine seeds it, so both stages see the same opening;
- with `data_from` set, every later state the data stage reached (its store's turns >= 1, i.e. the history up to
  the user turn that the next assistant turn answers) is added, for tasks of the set. Identical states appear once.

The rows are built once, by the main process, and saved to `<stage>/prompts/`; every later launch (a resume after a
preemption, another rank) reads them back, so a resumed stage trains on exactly the rows it started with.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from collab.chat import Conversation, message
from collab.config import DataStage, Recipe, TrainerStage
from collab.errors import CollabError
from collab.run.layout import StagePaths
from collab.simulators.base import UserSimulator
from collab.tasks.record import Task

PROMPTS_DIR = "prompts"
COLUMNS = ("prompt", "task_id", "conv_id", "turn")


def load_tasks(recipe: Recipe) -> list[Task]:
    """The recipe's training tasks (the set, split and limit of `tasks`)."""
    from collab.tasks.registry import load_task_set

    t = recipe.tasks
    return load_task_set(t.name, split=t.split, limit=t.limit, seed=t.seed)


def policy_prompt(recipe: Recipe, history: Conversation) -> list[dict[str, str]]:
    """What the policy is shown for a transcript: the system prompt (if the recipe has one), then the transcript."""
    messages = [dict(m) for m in history]
    if recipe.model.system_prompt:
        messages.insert(0, dict(message("system", recipe.model.system_prompt)))
    return messages


def transcript(prompt: list[dict[str, str]]) -> Conversation:
    """The user/assistant transcript of a prompt row (system messages dropped): the history MR rolls out from."""
    return [message(m["role"], m["content"]) for m in prompt if m["role"] != "system"]  # type: ignore[arg-type]


def opening_rows(recipe: Recipe, tasks: list[Task], simulator: UserSimulator) -> list[dict[str, Any]]:
    """One row per task: the simulated user's opening turn, in one batched simulator call."""
    from collab.seeding import stable_seed

    turns = simulator.respond([(task, []) for task in tasks], seeds=[stable_seed(recipe.seed, t.id) for t in tasks])
    rows = []
    for task, turn in zip(tasks, turns):
        if turn.text:
            rows.append({"prompt": policy_prompt(recipe, [message("user", turn.text)]), "task_id": task.id,
                         "conv_id": task.id, "turn": 0})
    return rows


def store_rows(recipe: Recipe, data_stage: DataStage, run_dir: Path, task_ids: set[str]) -> list[dict[str, Any]]:
    """Rows of the later states (turn >= 1) in a data stage's store, for tasks in `task_ids`."""
    from collab.data.engine import store_dir
    from collab.data.store import read_records

    folder = store_dir(run_dir, data_stage)
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise CollabError(f"the data stage '{data_stage.label}' has no store files in {folder}",
                          fix=f"run stage '{data_stage.label}' first, or remove data_from from the online stage.")
    rows = []
    for path in files:
        for record in read_records(path):
            history = record.get("history") or []
            task_id = record.get("task_id") or record.get("conv_id")
            if record.get("turn", 0) < 1 or not history or history[-1]["role"] != "user" or task_id not in task_ids:
                continue
            rows.append({"prompt": policy_prompt(recipe, history), "task_id": task_id,
                         "conv_id": str(record.get("conv_id", task_id)), "turn": int(record["turn"])})
    return rows


def build_prompt_rows(recipe: Recipe, stage: TrainerStage, run_dir: Path, simulator: UserSimulator,
                      tasks: list[Task]) -> list[dict[str, Any]]:
    """Every training state of the stage (see the module docstring), without duplicates, in a stable order."""
    rows = opening_rows(recipe, tasks, simulator)
    if stage.data_from:
        source = recipe.stage(stage.data_from)
        if not isinstance(source, DataStage):
            raise CollabError(f"stage '{stage.label}' reads conversation states from '{stage.data_from}', which is "
                              f"a {source.kind} stage, not a data stage",  # type: ignore[attr-defined]
                              fix="set data_from to a data stage, or remove it to train on openings only.")
        rows += store_rows(recipe, source, run_dir, {t.id for t in tasks})
    seen: set[str] = set()
    unique = []
    for row in rows:
        key = json.dumps([row["task_id"], row["prompt"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    if not unique:
        raise CollabError(f"stage '{stage.label}' has no prompts: the simulator opened none of the "
                          f"{len(tasks)} tasks", fix="check the task set (tasks.name, tasks.limit) and the simulator.")
    return unique


def prompts_path(run_dir: Path, stage: TrainerStage) -> Path:
    return StagePaths(run_dir, stage.label).root / PROMPTS_DIR


def save_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Save the rows as a DatasetDict (split `train`) through a temporary folder renamed into place."""
    from datasets import Dataset, DatasetDict

    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp))
    os.replace(tmp, path)


def load_online_data(recipe: Recipe, stage: TrainerStage, run_dir: Path) -> Any:
    """The stage's prompt dataset (DatasetDict with split `train`): built and saved by the main process on the
    first launch, read back by every process and every later launch."""
    from accelerate import PartialState
    from datasets import load_from_disk

    from collab.factory import build_simulator, cache_for

    state = PartialState()
    path = prompts_path(run_dir, stage)
    if state.is_main_process and not path.is_dir():
        simulator = build_simulator(recipe, cache_for(run_dir))
        rows = build_prompt_rows(recipe, stage, run_dir, simulator, load_tasks(recipe))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_rows(rows, path)
        print(f"collab: stage '{stage.label}': {len(rows)} prompts saved to {path}", flush=True)
    state.wait_for_everyone()
    return load_from_disk(str(path))


def sample_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt rows in the shape of the tracker's first-launch `data/samples` table (a conversation per row)."""
    return [{"conv_id": r["conv_id"], "turn": r["turn"], "messages": r["prompt"], "mr": None} for r in rows]
