"""Saving a finished trainer stage's model into `<run>/<stage>/final/`, which later stages and evaluations load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from collab.run.layout import StagePaths


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
