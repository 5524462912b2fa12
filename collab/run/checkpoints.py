"""Finding the checkpoint to resume from.

A process killed while saving leaves a `checkpoint-N/` folder without some of its files. The Trainer writes
`trainer_state.json` last, after the weights, optimizer, scheduler and RNG state, so a checkpoint is complete when
its `trainer_state.json` parses and its model weights are there (plain, sharded, LoRA adapter, DeepSpeed
`global_stepN/` or FSDP `pytorch_model_fsdp_*`). Resuming always uses the newest complete one; partial ones are
skipped.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """N of a `checkpoint-N` folder, else None."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Every `checkpoint-N` folder, oldest (smallest N) first, complete or not."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def _has_weights(path: Path) -> bool:
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return True
    # DeepSpeed keeps the (sharded) model states in global_stepN/, FSDP in pytorch_model_fsdp_0/ (or a .bin).
    return any(p.name.startswith(("global_step", "pytorch_model_fsdp")) for p in path.iterdir())


def _global_step(path: Path) -> int | None:
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def is_complete_checkpoint(path: Path) -> bool:
    """Whether `path` holds everything a resume needs: a readable trainer_state.json and the model weights."""
    return path.is_dir() and _global_step(path) is not None and _has_weights(path)


def last_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint under `checkpoints_dir`, or None when there is none."""
    for path in reversed(list_checkpoints(checkpoints_dir)):
        if is_complete_checkpoint(path):
            return path
    return None


def remove_partial_checkpoints(checkpoints_dir: Path, after: Path | None) -> list[Path]:
    """Delete incomplete checkpoints newer than `after` (all incomplete ones when None): the Trainer would
    otherwise count them when rotating and keep a torn folder instead of a good one. Returns what was removed."""
    floor = (checkpoint_step(after) or 0) if after is not None else -1
    removed = []
    for path in list_checkpoints(checkpoints_dir):
        if (checkpoint_step(path) or 0) > floor and not is_complete_checkpoint(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prune_finished(checkpoints_dir: Path, final: Path, keep: str) -> list[Path]:
    """Free the disk of a finished stage: `keep` is `last` (the newest complete checkpoint stays, for training
    further from it), `none` or `all`. A kept checkpoint's weight files that are byte-identical to final/'s become
    hard links to them (the last checkpoint is usually taken at the final step). Returns the removed folders."""
    if keep == "all":
        return []
    kept = last_complete_checkpoint(checkpoints_dir) if keep == "last" else None
    removed = []
    for path in list_checkpoints(checkpoints_dir):
        if path != kept:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if kept is not None:
        _link_identical_weights(kept, final)
    return removed


def _link_identical_weights(checkpoint: Path, final: Path) -> None:
    for name in WEIGHT_FILES:
        ours, theirs = checkpoint / name, final / name
        if not (ours.is_file() and theirs.is_file()) or os.path.samefile(ours, theirs):
            continue
        if ours.stat().st_size != theirs.stat().st_size or not filecmp.cmp(ours, theirs, shallow=False):
            continue
        link = ours.with_name(f".{name}.link")
        link.unlink(missing_ok=True)
        os.link(theirs, link)
        os.replace(link, ours)
