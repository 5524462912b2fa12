"""Trainer arguments collab derives from a recipe, and the starting model of a stage (full, LoRA, continued)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collab.config import Recipe, TrainerStage, validate_recipe
from collab.errors import CollabError
from collab.models import tiny_model_dir
from collab.train.arguments import make_config, trainer_arguments
from collab.train.start_model import build_model


def recipe(trainer: dict[str, Any] | None = None, lora: dict[str, Any] | None = None,
           init_from: str | None = None) -> Recipe:
    stages: list[dict[str, Any]] = [{"kind": "data"}, {"kind": "sft", "data_from": "data"},
                                    {"kind": "dpo", "data_from": "data", "trainer": trainer or {}}]
    if init_from:
        stages[2]["init_from"] = init_from
    return validate_recipe({"name": "setup", "model": {"name": "tiny-random-smollm2", "lora": lora},
                            "seed": 7, "stages": stages})


def dpo(r: Recipe) -> TrainerStage:
    stage = r.stages[2]
    assert isinstance(stage, TrainerStage)
    return stage


def test_cpu_arguments_point_into_the_run_and_turn_off_mixed_precision(tmp_path: Path) -> None:
    r = recipe({"max_steps": 6, "save_steps": 2})
    args = trainer_arguments(r, dpo(r), tmp_path, gpu=False, tracking=True)
    assert args == {"max_steps": 6, "save_steps": 2, "bf16": False, "fp16": False, "use_cpu": True,
                    "save_strategy": "steps", "save_total_limit": 2, "seed": 7,
                    "output_dir": str(tmp_path / "dpo" / "checkpoints"), "report_to": ["wandb"],
                    "run_name": "setup/dpo"}


def test_recipe_save_settings_are_kept_and_tracking_off_reports_nowhere(tmp_path: Path) -> None:
    r = recipe({"save_total_limit": 5, "save_strategy": "epoch", "seed": 1})
    args = trainer_arguments(r, dpo(r), tmp_path, gpu=True, tracking=False)
    assert (args["save_total_limit"], args["save_strategy"], args["seed"], args["report_to"]) == (5, "epoch", 1, "none")
    assert "use_cpu" not in args and "bf16" not in args  # a GPU machine keeps TRL's own precision defaults


@pytest.mark.parametrize("flag", ["bf16", "fp16"])
def test_mixed_precision_asked_for_on_a_cpu_machine_says_how_to_turn_it_off(tmp_path: Path, flag: str) -> None:
    r = recipe({flag: True})
    with pytest.raises(CollabError, match=rf"stages.2.trainer.{flag}: .* no GPU.*--set stages.2.trainer.{flag}=false"):
        trainer_arguments(r, dpo(r), tmp_path, gpu=False, tracking=False)
    assert trainer_arguments(r, dpo(r), tmp_path, gpu=True, tracking=False)[flag] is True


def test_save_only_model_is_refused_because_it_cannot_resume(tmp_path: Path) -> None:
    r = recipe({"save_only_model": True})
    with pytest.raises(CollabError, match="save_only_model.*cannot be resumed"):
        trainer_arguments(r, dpo(r), tmp_path, gpu=True, tracking=False)


def test_arguments_build_the_trl_config(tmp_path: Path) -> None:
    r = recipe({"max_steps": 3, "beta": 0.2, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]})
    config = make_config("dpo", trainer_arguments(r, dpo(r), tmp_path, gpu=False, tracking=False))
    assert type(config).__name__ == "DPOConfig"
    assert (config.output_dir, config.max_steps, config.beta, config.loss_type, config.use_cpu, config.bf16) == (
        str(tmp_path / "dpo" / "checkpoints"), 3, 0.2, ["sigmoid", "sft"], True, False)


# --- the starting model -------------------------------------------------------------------------------------------


def test_without_lora_the_whole_model_trains(tmp_path: Path) -> None:
    r = recipe()
    setup = build_model(r, dpo(r), tmp_path, needs_reference=True)
    assert setup.peft_config is None and setup.ref_model is None  # TRL loads the reference from the same path
    assert setup.source == str(tiny_model_dir())
    assert setup.tokenizer.pad_token is not None


def test_lora_settings_become_a_peft_config(tmp_path: Path) -> None:
    r = recipe(lora={"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]})
    config = build_model(r, dpo(r), tmp_path, needs_reference=True).peft_config
    assert (config.r, config.lora_alpha, config.lora_dropout, sorted(config.target_modules), config.task_type) == (
        8, 16, 0.05, ["q_proj", "v_proj"], "CAUSAL_LM")


def saved_adapter_stage(run_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = run_dir / "sft" / "final"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir()),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(final)
    AutoTokenizer.from_pretrained(tiny_model_dir()).save_pretrained(final)
    (run_dir / "sft" / "DONE").write_text("{}")


def test_adapter_from_an_earlier_stage_keeps_training_with_lora(tmp_path: Path) -> None:
    saved_adapter_stage(tmp_path)
    r = recipe(lora={"r": 4}, init_from="sft")
    setup = build_model(r, dpo(r), tmp_path, needs_reference=True)
    assert type(setup.model).__name__ == "PeftModelForCausalLM"
    assert setup.peft_config is None  # not wrapped twice
    assert any(p.requires_grad for n, p in setup.model.named_parameters() if "lora_" in n)


def test_adapter_from_an_earlier_stage_is_merged_for_full_training_with_a_merged_reference(tmp_path: Path) -> None:
    saved_adapter_stage(tmp_path)
    r = recipe(init_from="sft")
    setup = build_model(r, dpo(r), tmp_path, needs_reference=True)
    assert type(setup.model).__name__ == "LlamaForCausalLM" and type(setup.ref_model).__name__ == "LlamaForCausalLM"
    assert not any("lora_" in n for n, _ in setup.model.named_parameters())
    assert setup.source == str(tmp_path / "sft" / "final")


def test_starting_from_an_unfinished_stage_says_which(tmp_path: Path) -> None:
    r = recipe(init_from="sft")
    with pytest.raises(CollabError, match="starts from stage 'sft', which has not finished"):
        build_model(r, dpo(r), tmp_path, needs_reference=True)
