"""Reading a training stage's data from the data stage it names (`data_from`): `<data_from>/sft` or `/dpo`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collab.config import TrainerStage
from collab.errors import CollabError
from collab.run.layout import StagePaths
from collab.train.inputs import TrainerInputs


def load_stage_data(run_dir: Path, stage: TrainerStage, subset: str) -> Any:
    """The `datasets.DatasetDict` (splits train / eval) that `stage` trains on; clear errors when it is missing."""
    from datasets import DatasetDict, load_from_disk

    if not stage.data_from:
        raise CollabError(
            f"stage '{stage.label}' ({stage.kind}) has no data_from: it needs the data stage whose {subset}/ "
            "dataset it trains on",
            where=f"stages.{stage.label}.data_from",
            fix="set data_from to the name of an earlier data stage, e.g. `data_from: data`.",
        )
    source = StagePaths(run_dir, stage.data_from)
    path = source.root / subset
    if not source.is_done() or not path.is_dir():
        raise CollabError(
            f"stage '{stage.label}' trains on {path}, which does not exist yet (stage '{stage.data_from}' has not "
            "finished)",
            fix=f"run stage '{stage.data_from}' first (`collab train RECIPE` runs the stages in order).",
        )
    try:
        data = load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 -- an empty split (saved without shards, unloadable) or no dataset
        data = _load_splits(path)
        if data is None:
            raise CollabError(f"{path} is not a saved dataset ({e})", fix=f"rerun stage '{stage.data_from}'.") from None
    if not isinstance(data, DatasetDict):
        data = DatasetDict({"train": data})
    if "train" not in data or len(data["train"]) == 0:
        raise CollabError(
            f"{path} has no training rows",
            fix="generate more data (more tasks, more candidates) or lower the data stage's min_gap.",
        )
    return data


def _load_splits(path: Path) -> Any | None:
    """A saved DatasetDict read split by split, leaving out empty splits (saved without data files); None when
    `path` is not a saved DatasetDict."""
    from datasets import Dataset, DatasetDict

    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        loaded = {}
        for split in splits:
            state = json.loads((path / split / "state.json").read_text(encoding="utf-8"))
            if state.get("_data_files"):
                loaded[split] = Dataset.load_from_disk(str(path / split))
    except Exception:  # noqa: BLE001 -- any unreadable layout means: not a saved DatasetDict
        return None
    return DatasetDict(loaded)


def require_columns(dataset: Any, columns: tuple[str, ...], path: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise CollabError(f"{path} lacks the columns {missing} (it has {dataset.column_names})",
                          fix="regenerate it with this version's data stage.")


def eval_split(data: Any, args: dict[str, Any]) -> Any | None:
    """The eval split when the trainer is asked to evaluate (eval_strategy other than `no`) and it has rows."""
    if args.get("eval_strategy", "no") == "no" or "eval" not in data or len(data["eval"]) == 0:
        return None
    return data["eval"]


def build_offline_trainer(
    trainer_cls: type, to_row: Callable[[dict[str, Any]], dict[str, Any]], inputs: TrainerInputs, **extra: Any,
) -> Any:
    """A TRL trainer over a data stage's DatasetDict, its rows converted by `to_row` (shared by sft and dpo)."""

    def convert(split: Any) -> Any:
        return split.map(to_row, remove_columns=split.column_names)

    evaluation = eval_split(inputs.data, inputs.args)
    return trainer_cls(
        model=inputs.setup.model,
        args=inputs.config,
        train_dataset=convert(inputs.data["train"]),
        eval_dataset=convert(evaluation) if evaluation is not None else None,
        processing_class=inputs.setup.tokenizer,
        peft_config=inputs.setup.peft_config,
        callbacks=inputs.callbacks,
        **extra,
    )

