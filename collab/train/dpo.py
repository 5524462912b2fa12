"""The `dpo` stage: TRL DPOTrainer on `<data_from>/dpo` (conversational prompt / chosen / rejected).

The reference model is the stage's starting model (see `collab.train.start_model`): with LoRA, TRL computes it with
the adapter disabled (or from a frozen copy of a continued adapter), so no second model is loaded. The loss is the
recipe's (`loss_type`, `loss_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.train.data import build_offline_trainer, load_stage_data, require_columns
from collab.train.inputs import TrainerInputs

SUBSET = "dpo"
COLUMNS = ("prompt", "chosen", "rejected")


def as_message_list(value: Any) -> list[dict[str, str]]:
    """A chosen / rejected value as TRL's conversational format wants it: a list of messages."""
    return [value] if isinstance(value, dict) else list(value)


def to_preference(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["prompt"], "chosen": as_message_list(row["chosen"]),
            "rejected": as_message_list(row["rejected"])}


def load_dpo_data(recipe: Recipe, stage: TrainerStage, run_dir: Path) -> Any:
    """The `<data_from>/dpo` DatasetDict, checked for its prompt / chosen / rejected columns."""
    data = load_stage_data(run_dir, stage, SUBSET)
    require_columns(data["train"], COLUMNS, f"{stage.data_from}/{SUBSET}")
    return data


def build_dpo_trainer(trainer_class: type, inputs: TrainerInputs) -> Any:
    """TRL's DPOTrainer (`trainer_class`), cut to the stage's `max_completion_length` window when it has one."""
    length = inputs.stage.max_completion_length
    trainer_cls = trainer_class if length is None else with_completion_window(trainer_class, length)
    return build_offline_trainer(trainer_cls, to_preference, inputs, ref_model=inputs.setup.ref_model)


def with_completion_window(trainer_cls: type, length: int) -> type:
    """`trainer_cls` (TRL's DPOTrainer) keeping the first `length` tokens of every tokenized reply.

    The cut sits between TRL's tokenization and everything after it (the reference log-probabilities it may
    precompute, the collator), so policy and reference score the same tokens. A cut reply loses its end-of-turn
    token, so the model is not taught to stop where the window ends.
    """

    class CompletionWindowDPOTrainer(trainer_cls):  # type: ignore[misc,valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return dataset.map(_keep_first_tokens, fn_kwargs={"length": length})

    return CompletionWindowDPOTrainer


def _keep_first_tokens(row: dict[str, Any], length: int) -> dict[str, Any]:
    return {"chosen_ids": row["chosen_ids"][:length], "rejected_ids": row["rejected_ids"][:length]}
