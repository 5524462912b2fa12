"""Trainer callbacks of collab's training stages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from collab.train.preemption import PreemptionFlag, requested_on_any_rank


class MetricsLogCallback(TrainerCallback):
    """Append every log entry of the main process to the stage's metrics.jsonl (collab.train.curves reads it).

    Appended and flushed per entry, so a crash loses at most the entry being written; values that are not finite
    numbers are written as null (JSON has no NaN)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        entry: dict[str, Any] = {"step": state.global_step}
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                entry[key] = value if math.isfinite(value) else None
        # A line a crash cut short must not swallow the first entry of the next launch.
        start = "" if _ends_with_newline(self.path) else "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(start + json.dumps(entry) + "\n")


def _ends_with_newline(path: Path) -> bool:
    """True for a file whose last byte is a newline, and for an empty or missing one."""
    try:
        with path.open("rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"
    except OSError:
        return True


class PreemptionCallback(TrainerCallback):
    """Save a checkpoint and stop at the end of the step during which a preemption signal arrived."""

    def __init__(self, flag: PreemptionFlag) -> None:
        self.flag = flag
        self.stopped_at: int | None = None

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if requested_on_any_rank(self.flag.requested):
            if self.flag.signal_name is None:
                self.flag.signal_name = "signal on another rank"
            control.should_save = True
            control.should_training_stop = True
            if self.stopped_at is None:
                print(f"collab: step {state.global_step}: {self.flag.stop_note()}; saving a checkpoint", flush=True)
            self.stopped_at = state.global_step
        return control
