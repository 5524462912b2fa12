"""The effective batch of a trainer stage, and keeping it when the number of GPUs changes.

effective batch = per_device_train_batch_size x gradient_accumulation_steps x processes (nodes x GPUs per node).
A recipe written for 8 GPUs doubles its batch on 16 unless the accumulation halves. A stage that states
`effective_batch_size` fixes the batch: a launch whose numbers do not multiply to it is refused with the numbers
(`collab train`), or, with `collab launch slurm --scale-batch`, gets the accumulation that does (as a visible
`--set` override of the job, so the run directory's resolved recipe records it).

Defaults are TRL's (per_device_train_batch_size 8, gradient_accumulation_steps 1) when the recipe leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from collab.config import TrainerStage
from collab.errors import CollabError

TRL_DEFAULT_PER_DEVICE = 8
TRL_DEFAULT_ACCUMULATION = 1


@dataclass(frozen=True)
class BatchPlan:
    per_device: int
    accumulation: int
    world_size: int
    declared: int | None  # the stage's effective_batch_size, when it states one

    @property
    def effective(self) -> int:
        return self.per_device * self.accumulation * self.world_size

    @property
    def matches(self) -> bool:
        return self.declared is None or self.declared == self.effective

    def describe(self) -> str:
        text = (f"effective batch {self.effective} = per_device_train_batch_size {self.per_device} x "
                f"gradient_accumulation_steps {self.accumulation} x {self.world_size} processes")
        if self.declared is None:
            return text + " (the stage states no effective_batch_size, so it changes with the number of GPUs)"
        return text if self.matches else text + f", but the stage states effective_batch_size {self.declared}"


def batch_plan(stage: TrainerStage, world_size: int) -> BatchPlan:
    return BatchPlan(per_device=int(stage.trainer.get("per_device_train_batch_size", TRL_DEFAULT_PER_DEVICE)),
                     accumulation=int(stage.trainer.get("gradient_accumulation_steps", TRL_DEFAULT_ACCUMULATION)),
                     world_size=max(world_size, 1), declared=stage.effective_batch_size)


def scaled_accumulation(stage: TrainerStage, world_size: int) -> int:
    """The gradient_accumulation_steps that gives the stage's stated effective batch on `world_size` processes."""
    plan = batch_plan(stage, world_size)
    if plan.declared is None:
        raise CollabError(f"stage '{stage.label}' states no effective_batch_size, so there is no batch to keep",
                          fix=f"add `effective_batch_size: {plan.effective}` (or the batch it was tuned for) to "
                          "the stage, or launch without --scale-batch.")
    per_step = plan.per_device * plan.world_size
    if plan.declared % per_step:
        raise CollabError(
            f"stage '{stage.label}': effective_batch_size {plan.declared} is not a multiple of "
            f"per_device_train_batch_size {plan.per_device} x {plan.world_size} processes = {per_step}, so no "
            "gradient_accumulation_steps keeps it",
            fix=f"change per_device_train_batch_size (--set stages.{stage.label}.trainer."
            "per_device_train_batch_size=N) or the number of GPUs so that it divides the batch.")
    return plan.declared // per_step


def check_effective_batch(stage: TrainerStage, world_size: int) -> BatchPlan:
    """The stage's batch on `world_size` processes; refused with the numbers when it misses the stated one."""
    plan = batch_plan(stage, world_size)
    if plan.matches:
        return plan
    try:
        fix = (f"--set stages.{stage.label}.trainer.gradient_accumulation_steps="
               f"{scaled_accumulation(stage, world_size)} keeps it on {plan.world_size} processes "
               "(`collab launch slurm --scale-batch` adds that for you)")
    except CollabError as e:  # no accumulation keeps it: its message says which numbers to change
        fix = str(e)
    raise CollabError(f"stage '{stage.label}': {plan.describe()}", fix=fix)
