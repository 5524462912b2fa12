"""The `sft` stage: TRL SFTTrainer on `<data_from>/sft`.

Each row holds a conversation up to and including its best-MR assistant turn. It is trained as prompt-completion
(prompt = every message before the last, completion = that last assistant turn), so the loss falls on the scored
turn only and a conversation's earlier turns, which are rows of their own, are not counted again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.train.data import build_offline_trainer, load_stage_data, require_columns
from collab.train.inputs import TrainerInputs

SUBSET = "sft"


def to_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    messages = row["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise CollabError(f"an sft row of conversation {row.get('conv_id')!r} does not end with an assistant turn",
                          fix="regenerate the data stage.")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def load_sft_data(recipe: Recipe, stage: TrainerStage, run_dir: Path) -> Any:
    """The `<data_from>/sft` DatasetDict, checked for its `messages` column."""
    data = load_stage_data(run_dir, stage, SUBSET)
    require_columns(data["train"], ("messages",), f"{stage.data_from}/{SUBSET}")
    return data


def build_sft_trainer(trainer_class: type, inputs: TrainerInputs) -> Any:
    """TRL's SFTTrainer (`trainer_class`) on the rows as prompt-completion pairs."""
    return build_offline_trainer(trainer_class, to_prompt_completion, inputs)
