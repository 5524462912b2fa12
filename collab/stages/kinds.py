"""The stage kinds: the one table that says, for every `kind:` a recipe stage may have, what runs it and where.

Every other module reads this table (the recipe schema, the pipeline, the per-rank trainer entry, the online
trainers, pre-flight, the Slurm planner); none lists kinds of its own. Adding a kind is one entry here, plus the
module that holds its code (docs/architecture.md, "Stage kinds", shows KTO as an example).

Two places a stage runs (docs/architecture.md, "Processes"):

- in the driver (`collab train`, `collab resume`): `data` and `eval`, whose `run` function the pipeline calls;
- under `accelerate launch` (every trainer kind): the driver launches `collab.train.rank_main` once per rank, which
  builds the TRL config and trainer this table names, from the data its `load_data` returns.

Lazy references: every class and function in the table is a string "module:attribute", imported by `load` (the one
resolver) when a stage of that kind runs. So importing this module, validating a recipe and `collab --help` never
import torch or TRL.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Literal

from collab.errors import CollabError


@dataclass(frozen=True)
class StageKind:
    """What the pipeline needs to know about one stage kind."""

    name: str
    """The `kind:` of a recipe stage."""
    generates: bool
    """Whether the stage generates text through the recipe's backends (policy rollouts, simulated user, judge):
    pre-flight checks their endpoints and packages, and Slurm gives it the recipe's `serve:` nodes."""
    run: str | None = None
    """Driver kinds: `run(recipe, stage, run_dir)`, called in the `collab` process. None for trainer kinds, which
    the driver launches under `accelerate launch` (collab.train.driver)."""
    saved_state: str | None = None
    """Driver kinds: `saved_state(stage_dir) -> str`, what an interrupted stage of this kind has kept on disk, in
    words, for the one line Ctrl-C prints (collab.interrupt). None for trainer kinds: their last complete checkpoint
    says it."""
    trl_config: str | None = None
    """Trainer kinds: the TRL config class that the stage's `trainer:` arguments are checked against and build."""
    trainer: str | None = None
    """Trainer kinds: the TRL trainer class, handed to `build_trainer`."""
    load_data: str | None = None
    """Trainer kinds: `load_data(recipe, stage, run_dir) -> DatasetDict` (splits train, eval), called on every rank."""
    build_trainer: str | None = None
    """Trainer kinds: `build_trainer(trainer_class, inputs: collab.train.inputs.TrainerInputs)` returning the trainer
    (collab.train.rank_main calls it)."""
    extra_arguments: str | None = None
    """Trainer kinds: `extra(stage, args, *, gpu) -> args`, what the kind adds to or refuses in the TRL arguments
    after collab's common ones (collab.train.arguments); None when it adds nothing."""
    reply_length: str | None = None
    """Online kinds: the TRL config key that bounds a sampled completion (`max_new_tokens`, `max_completion_length`)."""
    online: Literal["pairs", "groups"] | None = None
    """Online trainer kinds, which compute MR while training with the policy being trained: `pairs` (two completions
    per prompt, scored together, as OnlineDPO compares them) or `groups` (a group of completions per prompt scored
    asynchronously, GRPO/RLOO, whose KL reference TRL loads from the model's id). None: offline (or not a trainer)."""
    reference_model: bool = False
    """Trainer kinds whose loss needs the starting model as a frozen reference (collab.train.start_model)."""
    needs_data_from: bool = False
    """Trainer kinds that train on a data stage's output, named by the stage's `data_from`."""
    completion_window: bool = False
    """Offline pair kinds whose builder honours the stage key `max_completion_length` (the loss sees the first N
    tokens of each reply); the schema refuses the key on every other kind."""

    @property
    def launched(self) -> bool:
        """Whether the stage runs in processes started by `accelerate launch` (all trainer kinds)."""
        return self.trainer is not None


_ONLINE = "collab.train.online"

KINDS: dict[str, StageKind] = {kind.name: kind for kind in (
    StageKind("data", generates=True, run="collab.data.stage:run_data_stage",
              saved_state="collab.data.store:saved_turns"),
    StageKind("eval", generates=True, run="collab.evaluate.runner:run_eval_stage",
              saved_state="collab.evaluate.store:saved_conversations"),
    StageKind("sft", generates=False, trl_config="trl:SFTConfig", trainer="trl:SFTTrainer",
              load_data="collab.train.sft:load_sft_data", build_trainer="collab.train.sft:build_sft_trainer",
              needs_data_from=True),
    StageKind("dpo", generates=False, trl_config="trl:DPOConfig", trainer="trl:DPOTrainer",
              load_data="collab.train.dpo:load_dpo_data", build_trainer="collab.train.dpo:build_dpo_trainer",
              reference_model=True, needs_data_from=True, completion_window=True),
    StageKind("online_dpo", generates=True, trl_config="trl.experimental.online_dpo:OnlineDPOConfig",
              trainer="trl.experimental.online_dpo:OnlineDPOTrainer", load_data=f"{_ONLINE}_data:load_online_data",
              build_trainer=f"{_ONLINE}:build_online_trainer", extra_arguments=f"{_ONLINE}:online_arguments",
              reply_length="max_new_tokens", online="pairs"),
    StageKind("grpo", generates=True, trl_config="trl:GRPOConfig", trainer="trl:GRPOTrainer",
              load_data=f"{_ONLINE}_data:load_online_data", build_trainer=f"{_ONLINE}:build_online_trainer",
              extra_arguments=f"{_ONLINE}:online_arguments", reply_length="max_completion_length",
              online="groups"),
    StageKind("rloo", generates=True, trl_config="trl:RLOOConfig", trainer="trl:RLOOTrainer",
              load_data=f"{_ONLINE}_data:load_online_data", build_trainer=f"{_ONLINE}:build_online_trainer",
              extra_arguments=f"{_ONLINE}:online_arguments", reply_length="max_completion_length",
              online="groups"),
)}

TRAINER_KINDS: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if kind.launched)
"""The kinds a `TrainerStage` may have (the recipe schema's `kind` of a trainer stage)."""


def stage_kind(name: str) -> StageKind:
    """The table's entry for `name`; a CollabError listing the kinds when there is none."""
    try:
        return KINDS[name]
    except KeyError:
        raise CollabError(f"unknown stage kind '{name}'", fix=f"use one of {list(KINDS)}.") from None


def load(ref: str) -> Any:
    """Import the class or function a table entry names ("module:attribute"); the table's only resolver.

    A missing package (trl, vllm, a stage module) is a CollabError naming the reference, not a traceback.
    """
    module_name, _, attribute = ref.partition(":")
    if module_name.split(".")[0] == "trl":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # else TRL warns about its experimental trainers
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CollabError(f"{ref} cannot be imported ({e})",
                          fix="install the package it needs (`pip install -e .` installs collab's).") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise CollabError(f"{module_name} has no {attribute} (named by the stage-kind table, {ref})",
                          fix="correct the entry in collab/stages/kinds.py.") from None
