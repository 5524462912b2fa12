"""`max_completion_length` on a dpo stage: the loss sees the first N tokens of each reply, policy and reference alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collab.config import validate_recipe
from collab.errors import CollabError
from collab.models import load_tokenizer, tiny_model_dir
from collab.train.dpo import with_completion_window


def _trainer(trainer_cls: type, tmp_path: Path) -> Any:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    row = {"prompt": [{"role": "user", "content": "Tom has 3 boxes of apples. How many apples does Tom have?"}],
           "chosen": [{"role": "assistant", "content": "Could you tell me how many apples each box holds?"}],
           "rejected": [{"role": "assistant", "content": "The answer is 36 apples, twelve in every box."}]}
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_steps=1,
                       report_to="none", precompute_ref_log_probs=True, dataset_num_proc=None)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))
    return trainer_cls(model=model, args=config, train_dataset=Dataset.from_list([row] * 2),
                       processing_class=load_tokenizer(str(tiny_model_dir())))


def test_the_window_keeps_the_first_tokens_and_the_reference_scores_only_those(tmp_path: Path) -> None:
    from trl import DPOTrainer

    full = _trainer(DPOTrainer, tmp_path / "full").train_dataset[0]
    cut = _trainer(with_completion_window(DPOTrainer, 3), tmp_path / "cut").train_dataset[0]
    assert len(full["chosen_ids"]) > 3 and len(full["rejected_ids"]) > 3
    assert cut["chosen_ids"] == full["chosen_ids"][:3] and cut["rejected_ids"] == full["rejected_ids"][:3]
    assert cut["prompt_ids"] == full["prompt_ids"]
    # fewer tokens scored: the reference log-probability of the cut reply is a shorter, larger (less negative) sum
    assert cut["ref_chosen_logps"] > full["ref_chosen_logps"]


def test_the_window_is_refused_on_other_stage_kinds() -> None:
    with pytest.raises(CollabError, match="max_completion_length applies to dpo stages only, not sft"):
        validate_recipe({"stages": [{"kind": "data"}, {"kind": "sft", "data_from": "data",
                                                        "max_completion_length": 8}]})
    recipe = validate_recipe({"stages": [{"kind": "data"}, {"kind": "dpo", "data_from": "data",
                                                            "max_completion_length": 8}]})
    assert recipe.stages[1].max_completion_length == 8  # type: ignore[union-attr]
