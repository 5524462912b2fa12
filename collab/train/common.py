"""What every trainer stage (sft, dpo, online_dpo, grpo, rloo) shares: the starting model (full or LoRA), the
Trainer arguments, the final save.

Starting model (`init_from` empty -> `model.name`; else the earlier stage's `final/`):

| start            | `model.lora` set                                   | `model.lora` empty                      |
|------------------|----------------------------------------------------|-----------------------------------------|
| full model       | new LoRA adapter (TRL `peft_config`)               | full fine-tuning                        |
| LoRA adapter     | the adapter keeps training (DPO: its frozen copy   | the adapter is merged into its base,    |
|                  | is the reference)                                  | then full fine-tuning                   |

DPO's reference model is the starting model: with a new adapter TRL disables the adapter to get it; with a
continued adapter TRL adds a frozen copy of it; with full fine-tuning TRL loads the start again, except after a
merge, where collab passes a second merged copy.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.models import resolve_model
from collab.run.layout import StagePaths


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def stage_index(recipe: Recipe, stage: TrainerStage) -> int:
    return next(i for i, s in enumerate(recipe.stages) if s.label == stage.label)


# --- the starting model ------------------------------------------------------------------------------------------


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


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file() and not (Path(path) / "config.json").is_file()


def adapter_base(path: str) -> str:
    import json

    base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
    return resolve_model(base)


def lora_config(recipe: Recipe) -> Any | None:
    """peft.LoraConfig from `model.lora`, or None for full fine-tuning."""
    if recipe.model.lora is None:
        return None
    from peft import LoraConfig

    lora = recipe.model.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


@dataclass
class ModelSetup:
    """The model handed to a TRL trainer, with what goes along with it."""

    model: Any
    tokenizer: Any
    peft_config: Any | None
    ref_model: Any | None
    source: str


def _dtype(recipe: Recipe) -> Any:
    import torch

    return "auto" if recipe.model.dtype == "auto" else getattr(torch, recipe.model.dtype)


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer_dir = path if (Path(path) / "tokenizer_config.json").is_file() or not is_adapter(path) else \
        adapter_base(path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _merged(path: str, dtype: Any) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def build_model(recipe: Recipe, stage: TrainerStage, run_dir: Path, *, needs_reference: bool) -> ModelSetup:
    """Load the stage's starting model as the table in this module's docstring says."""
    from transformers import AutoModelForCausalLM

    source = init_source(recipe, stage, run_dir)
    dtype = _dtype(recipe)
    tokenizer = _load_tokenizer(source)
    peft_config = lora_config(recipe)
    ref_model = None
    if not is_adapter(source):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    elif peft_config is not None:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(adapter_base(source), dtype=dtype)
        model = PeftModel.from_pretrained(base, source, is_trainable=True)
        peft_config = None  # the adapter exists already; TRL must not wrap it again
    else:
        model = _merged(source, dtype)
        if needs_reference:
            ref_model = _merged(source, dtype).eval()
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return ModelSetup(model=model, tokenizer=tokenizer, peft_config=peft_config, ref_model=ref_model, source=source)


# --- trainer arguments -------------------------------------------------------------------------------------------

DEFAULT_SAVE_TOTAL_LIMIT = 2
ONLINE_KINDS = ("online_dpo", "grpo", "rloo")


def trainer_arguments(
    recipe: Recipe, stage: TrainerStage, run_dir: Path, *, gpu: bool, tracking: bool
) -> dict[str, Any]:
    """Keyword arguments of the stage's TRL config: `stage.trainer` plus what collab decides.

    collab sets output_dir (`<run>/<stage>/checkpoints`), report_to and run_name; defaults save_strategy to
    `steps`, save_total_limit to 2 and seed to the recipe's seed; refuses save_only_model (such checkpoints cannot
    resume); and on a machine without a GPU sets use_cpu and turns off bf16/fp16 unless the recipe asked for them,
    which is an error there. Online stages get their own additions and checks (`collab.train.online.
    online_arguments`: logging every step, the vLLM server address, unsupported vLLM settings).
    """
    index = stage_index(recipe, stage)
    args = dict(stage.trainer)
    if args.get("save_only_model"):
        raise CollabError(
            f"stage '{stage.label}' sets save_only_model, whose checkpoints cannot be resumed",
            where=f"stages.{index}.trainer.save_only_model",
            fix=f"remove it (collab saves the final model separately), e.g. --set stages.{index}.trainer."
            "save_only_model=false.",
        )
    if not gpu:
        for flag in ("bf16", "fp16"):
            if args.get(flag):
                raise CollabError(
                    f"stage '{stage.label}' asks for {flag} mixed precision, but this machine has no GPU",
                    where=f"stages.{index}.trainer.{flag}",
                    fix=f"run it on a GPU machine, or train in float32 here with --set stages.{index}.trainer."
                    f"{flag}=false.",
                )
        args.update(bf16=False, fp16=False, use_cpu=True)
    args.setdefault("save_strategy", "steps")
    args.setdefault("save_total_limit", DEFAULT_SAVE_TOTAL_LIMIT)
    args.setdefault("seed", recipe.seed)
    from collab.train.tracking import run_name

    args.update(
        output_dir=str(StagePaths(run_dir, stage.label).checkpoints),
        report_to=["wandb"] if tracking else "none",
        run_name=run_name(recipe, stage),
    )
    if stage.kind in ONLINE_KINDS:
        from collab.train.online import online_arguments

        args = online_arguments(stage, args, gpu=gpu)
    return args


def make_config(kind: str, args: dict[str, Any]) -> Any:
    """The TRL config object (SFTConfig, DPOConfig) for `args`; a rejection is a CollabError."""
    from collab.config import trainer_config_class

    cls = trainer_config_class(kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return cls(**args)
    except (TypeError, ValueError) as e:
        raise CollabError(f"{cls.__name__} rejects the stage's trainer arguments: {e}") from None


# --- the final model ---------------------------------------------------------------------------------------------


def save_final(trainer: Any, paths: StagePaths, *, is_main: bool) -> Path:
    """Save the trained model (or adapter) and tokenizer into `final/` through a temporary folder renamed into
    place, so `final/` is never half-written. Every process must call it (sharded models gather on save)."""
    from accelerate import PartialState

    state = PartialState()
    tmp = paths.root / ".final.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(tmp))
    state.wait_for_everyone()
    if is_main:
        tokenizer = getattr(trainer, "processing_class", None)
        if tokenizer is not None and not (tmp / "tokenizer_config.json").is_file():
            tokenizer.save_pretrained(str(tmp))
        if paths.final.exists():
            old = paths.root / ".final.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(paths.final, old)
            os.replace(tmp, paths.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, paths.final)
    state.wait_for_everyone()
    return paths.final
