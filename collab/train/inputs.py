"""What every trainer kind's `build_trainer` (collab.stages.kinds) receives from the per-rank entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.train.start_model import ModelSetup


@dataclass
class TrainerInputs:
    """The pieces a TRL trainer is built from, decided before the kind's own builder runs."""

    recipe: Recipe
    """The run's resolved recipe."""
    stage: TrainerStage
    """The stage being trained."""
    run_dir: Path
    """The run directory (collab.run.layout)."""
    setup: ModelSetup
    """The starting model, its tokenizer, LoRA config and reference (collab.train.start_model)."""
    config: Any
    """The TRL config object built from `args`."""
    args: dict[str, Any]
    """The keyword arguments `config` was built from (collab.train.arguments)."""
    data: Any
    """The DatasetDict the kind's `load_data` returned (split `train`, for offline kinds also `eval`)."""
    callbacks: list[Any]
    """Trainer callbacks (the preemption callback, in a launched stage)."""
