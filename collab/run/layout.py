"""Where a stage keeps its files inside the run directory (docs/architecture.md, "The run directory").

Every stage kind has a folder `<run>/<stage>/` with DONE in it once the stage finished; a trainer stage's holds:

```
<run>/<stage>/
  DONE              written last, once final/ is in place
  checkpoints/      checkpoint-N/ folders of the Trainer (resume points)
  final/            the trained model or LoRA adapter, with its tokenizer
  wandb_id          the W&B run id of the stage, generated once
  launch.json       how the stage was launched: accelerate config, number of processes, command
  preempted.json    written by the trainer when it stopped on a signal after saving a checkpoint
  train.log         the output of every launch of the stage, appended
```
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.config import Recipe
from collab.io import atomic_write_json

RESOLVED_RECIPE = "recipe.resolved.yaml"
DONE = "DONE"


@dataclass(frozen=True)
class StagePaths:
    """The files of one stage; `run_dir / label` is the stage folder."""

    run_dir: Path
    label: str

    @property
    def root(self) -> Path:
        return self.run_dir / self.label

    @property
    def done(self) -> Path:
        return self.root / DONE

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id"

    @property
    def launch(self) -> Path:
        return self.root / "launch.json"

    @property
    def preempted(self) -> Path:
        return self.root / "preempted.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def metrics(self) -> Path:
        """Every logged step of a trainer stage, one JSON object a line (collab.train.curves reads it back)."""
        return self.root / "metrics.jsonl"

    def is_done(self) -> bool:
        return self.done.is_file()

    def mark_done(self, **info: Any) -> None:
        """Write DONE atomically; its content (JSON) is informational, its presence is what counts."""
        atomic_write_json(self.done, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info})

    def read_launch(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.launch.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def started_stages(recipe: Recipe, run_dir: Path) -> list[str]:
    """Labels of the recipe's stages that have a folder in `run_dir` (started, finished or not)."""
    return [s.label for s in recipe.stages if (run_dir / s.label).exists()]


def finished_stages(recipe: Recipe, run_dir: Path) -> list[str]:
    """Labels of the recipe's stages whose DONE marker is in `run_dir`."""
    return [s.label for s in recipe.stages if StagePaths(run_dir, s.label).is_done()]
