"""The stage-kind table: every kind's references resolve, the recipe schema takes its kinds from it, and reading it
(or validating a recipe) imports neither torch nor TRL."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from collab.config import TrainerStage
from collab.errors import CollabError
from collab.stages.kinds import KINDS, TRAINER_KINDS, load, stage_kind

REFERENCES = ("run", "trl_config", "trainer", "load_data", "build_trainer", "extra_arguments")


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_reference_of_a_kind_resolves_to_a_class_or_function(name: str) -> None:
    kind = KINDS[name]
    for field in REFERENCES:
        ref = getattr(kind, field)
        if ref is not None:
            assert callable(load(ref)), f"{name}.{field} = {ref}"


def test_a_kind_runs_either_in_the_driver_or_under_accelerate_launch() -> None:
    for kind in KINDS.values():
        assert (kind.run is None) == kind.launched, kind.name
        if kind.launched:
            assert None not in (kind.trl_config, kind.load_data, kind.build_trainer), kind.name
    assert [k for k, v in KINDS.items() if not v.launched] == ["data", "eval"]


def test_the_recipe_schema_accepts_exactly_the_tables_trainer_kinds() -> None:
    assert set(typing.get_args(TrainerStage.model_fields["kind"].annotation)) == set(TRAINER_KINDS)
    assert TRAINER_KINDS == ("sft", "dpo", "online_dpo", "grpo", "rloo")


def test_online_kinds_say_how_they_score() -> None:
    assert {k: v.online for k, v in KINDS.items() if v.online} == {"online_dpo": "pairs", "grpo": "groups",
                                                                    "rloo": "groups"}


def test_an_unknown_kind_or_reference_is_a_clear_error() -> None:
    with pytest.raises(CollabError, match=r"unknown stage kind 'kto'.*use one of \['data', 'eval', 'sft'"):
        stage_kind("kto")
    with pytest.raises(CollabError, match=r"collab.train.kto:load_kto_data cannot be imported"):
        load("collab.train.kto:load_kto_data")
    with pytest.raises(CollabError, match=r"collab.train.sft has no load_kto_data"):
        load("collab.train.sft:load_kto_data")


def test_reading_the_table_and_validating_a_recipe_import_neither_torch_nor_trl() -> None:
    code = ("import sys; from collab.config import validate_recipe; "
            "validate_recipe({'model': {'name': 'tiny-random-smollm2'}, 'stages': [{'kind': 'data'}]}); "
            "import collab.stages.pipeline, collab.train.rank_main, collab.cli; "
            "print(sorted(m for m in ('torch', 'trl') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True)
    assert out.stdout.strip() == "[]"
