"""The `dpo` stage: TRL DPOTrainer on `<data_from>/dpo` (conversational prompt / chosen / rejected).

The reference model is the stage's starting model (see `collab.train.common`): with LoRA, TRL computes it with the
adapter disabled (or from a frozen copy of a continued adapter), so no second model is loaded. The loss is the
recipe's (`loss_type`, `loss_weights`); REFERENCE.md section 5 shows why ["sigmoid", "sft"] moves behaviour on
small models where plain sigmoid does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collab.config import TrainerStage
from collab.train.common import ModelSetup
from collab.train.data import build_offline_trainer, load_stage_data, require_columns

SUBSET = "dpo"
COLUMNS = ("prompt", "chosen", "rejected")


def as_message_list(value: Any) -> list[dict[str, str]]:
    """A chosen / rejected value as TRL's conversational format wants it: a list of messages."""
    return [value] if isinstance(value, dict) else list(value)


def to_preference(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["prompt"], "chosen": as_message_list(row["chosen"]),
            "rejected": as_message_list(row["rejected"])}


def load_dpo_data(run_dir: Path, stage: TrainerStage) -> Any:
    data = load_stage_data(run_dir, stage, SUBSET)
    require_columns(data["train"], COLUMNS, f"{stage.data_from}/{SUBSET}")
    return data


def build_dpo_trainer(setup: ModelSetup, config: Any, data: Any, args: dict[str, Any], callbacks: list[Any]) -> Any:
    from trl import DPOTrainer

    return build_offline_trainer(DPOTrainer, to_preference, setup, config, data, args, callbacks,
                                 ref_model=setup.ref_model)
