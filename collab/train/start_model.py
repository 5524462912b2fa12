"""The model a trainer stage starts from: the full model or a LoRA adapter, its tokenizer and DPO's reference.

Starting model (`init_from` empty -> `model.name`; else the earlier stage's `final/`):

| start            | `model.lora` set                                   | `model.lora` empty                      |
|------------------|----------------------------------------------------|-----------------------------------------|
| full model       | new LoRA adapter (TRL `peft_config`)               | full fine-tuning                        |
| LoRA adapter     | the adapter keeps training (DPO: its frozen copy   | the adapter is merged into its base,    |
|                  | is the reference)                                  | then full fine-tuning                   |

DPO's reference model is the starting model: with a new adapter TRL disables the adapter to get it; with a
continued adapter TRL adds a frozen copy of it; with full fine-tuning TRL loads the start again, except after a
merge, where collab passes a second merged copy. Loading itself (names, adapters, dtypes) is collab.models'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.models import is_adapter, load_causal_lm, load_tokenizer, resolve_model, torch_dtype
from collab.run.layout import StagePaths


@dataclass
class ModelSetup:
    """The model handed to a TRL trainer, with what goes along with it."""

    model: Any
    """The model to train (a peft PeftModel when an adapter keeps training)."""
    tokenizer: Any
    """Its tokenizer, with a pad token."""
    peft_config: Any | None
    """A new LoRA adapter for TRL to add (peft LoraConfig); None for full fine-tuning or a continued adapter."""
    ref_model: Any | None
    """The frozen reference, only where TRL cannot build it itself (a merged adapter start)."""
    source: str
    """Path or hub id of the starting model."""


def init_source(recipe: Recipe, stage: TrainerStage, run_dir: Path) -> str:
    """Path (or hub id) of the model the stage starts from."""
    if not stage.init_from:
        return resolve_model(recipe.model.name, where="model.name")
    source = StagePaths(run_dir, stage.init_from)
    if not source.is_done() or not source.final.is_dir():
        raise CollabError(
            f"stage '{stage.label}' starts from stage '{stage.init_from}', which has not finished "
            f"({source.final} is missing)",
            fix=f"run that stage first (`collab train RECIPE --stage {stage.init_from}` or `collab resume "
            f"{run_dir}`).",
        )
    return str(source.final)


def lora_config(recipe: Recipe) -> Any | None:
    """peft.LoraConfig from `model.lora`, or None for full fine-tuning."""
    if recipe.model.lora is None:
        return None
    from peft import LoraConfig

    lora = recipe.model.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def build_model(recipe: Recipe, stage: TrainerStage, run_dir: Path, *, needs_reference: bool) -> ModelSetup:
    """Load the stage's starting model as the table in this module's docstring says."""
    source = init_source(recipe, stage, run_dir)
    dtype = torch_dtype(recipe.model.dtype)
    tokenizer = load_tokenizer(source)
    peft_config = lora_config(recipe)
    ref_model = None
    if not is_adapter(source):
        model = load_causal_lm(source, dtype=dtype)
    elif peft_config is not None:
        model = load_causal_lm(source, dtype=dtype, adapter="train")
        peft_config = None  # the adapter exists already; TRL must not wrap it again
    else:
        model = load_causal_lm(source, dtype=dtype)
        if needs_reference:
            ref_model = load_causal_lm(source, dtype=dtype).eval()
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return ModelSetup(model=model, tokenizer=tokenizer, peft_config=peft_config, ref_model=ref_model, source=source)
