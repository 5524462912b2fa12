"""Trainer callbacks of collab's training stages."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from collab.train.preemption import PreemptionFlag, requested_on_any_rank


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
