"""Recipes: schema validation with the file, key path and closest valid key; overrides; resolved recipes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from collab.config import Recipe, TrainerStage, load_recipe, recipes_root, save_resolved
from collab.errors import CollabError


def write(tmp_path: Path, data: object, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(CollabError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_empty_recipe_file_is_refused(tmp_path: Path) -> None:
    assert "is empty" in error_of(write(tmp_path, ""))


def test_minimal_recipe_gets_documented_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, {"stages": []}))
    assert recipe.name == "r"
    assert recipe.model.name == "smollm2-135m-instruct"
    assert (recipe.reward.window, recipe.reward.samples, recipe.reward.token_mode) == (2, 3, "window")
    assert recipe.run_dir == Path("runs/r")


def test_misspelled_key_names_file_path_and_closest_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"reward": {"windw": 3}})
    message = error_of(path)
    assert str(path) in message
    assert "'reward.windw'" in message
    assert "did you mean 'reward.window'" in message


def test_misspelled_top_level_section_suggests_the_section(tmp_path: Path) -> None:
    assert "did you mean 'simulator'" in error_of(write(tmp_path, {"simulater": {"kind": "sharded"}}))


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, {"reward": {"samples": "three"}}))
    assert "'reward.samples'" in message and "'three'" in message


def test_unknown_stage_kind_lists_valid_kinds(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, {"stages": [{"kind": "ppo"}]}))
    assert "'ppo'" in message and "'grpo'" in message


def test_stage_key_misspelling_hides_the_union_tag_in_the_path(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, {"stages": [{"kind": "dpo", "trainr": {}}]}))
    assert "'stages.0.trainr'" in message and "did you mean 'stages.0.trainer'" in message


def test_trainer_arguments_are_checked_against_the_trl_config(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, {"stages": [{"kind": "dpo", "trainer": {"learnin_rate": 1e-5}}]}))
    assert "stages.0.trainer.learnin_rate" in message
    assert "DPOConfig" in message and "learning_rate" in message


def test_trainer_argument_of_wrong_type_is_rejected(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, {"stages": [{"kind": "sft", "trainer": {"num_train_epochs": "many"}}]}))
    assert "stages.0.trainer.num_train_epochs" in message and "SFTConfig" in message


def test_gpu_only_trainer_flags_validate_on_a_cpu_machine(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, {"stages": [{"kind": "grpo", "trainer": {"bf16": True, "num_iterations": 2}}]}))
    stage = recipe.stages[0]
    assert isinstance(stage, TrainerStage) and stage.trainer == {"bf16": True, "num_iterations": 2}


def test_validating_trainer_arguments_inside_a_launched_trainer_leaves_its_devices_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validation builds the TRL config with use_cpu=True. Inside `accelerate launch` that used to open a gloo
    process group in the trainer itself, which the real GPU run then inherited (every gather failed on an H200)."""
    import torch.distributed as dist
    from accelerate import PartialState

    from collab.config import check_trainer_args

    for key, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29591"}.items():
        monkeypatch.setenv(key, value)
    assert check_trainer_args("dpo", {"beta": 0.2, "bf16": True}) == []
    assert not dist.is_initialized()
    assert PartialState._shared_state == {}
    assert os.environ["LOCAL_RANK"] == "0" and "ACCELERATE_USE_CPU" not in os.environ


def test_yaml_exponent_without_a_dot_becomes_a_float_for_trl(tmp_path: Path) -> None:
    """YAML 1.1 reads 5e-5 as a string; the trainer must still get the number."""
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - kind: sft\n    trainer: {learning_rate: 5e-5, max_steps: '3', run_name: '7'}\n")
    recipe = load_recipe(path, ["stages.0.trainer.weight_decay=1e-1"])
    trainer = recipe.stages[0].trainer
    assert trainer["learning_rate"] == 5e-5 and isinstance(trainer["learning_rate"], float)
    assert trainer["max_steps"] == 3 and trainer["weight_decay"] == 0.1
    assert trainer["run_name"] == "7"  # a string field keeps its string


def test_output_dir_in_trainer_arguments_is_refused(tmp_path: Path) -> None:
    assert "set by collab" in error_of(write(tmp_path, {"stages": [{"kind": "dpo", "trainer": {"output_dir": "x"}}]}))


def test_stage_reference_must_name_an_earlier_stage(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, {"stages": [{"kind": "dpo", "init_from": "sft"}, {"kind": "sft"}]}))
    assert "refers to 'sft'" in message


def test_duplicate_stage_names_are_refused(tmp_path: Path) -> None:
    assert "unique" in error_of(write(tmp_path, {"stages": [{"kind": "sft"}, {"kind": "sft"}]}))


def test_llm_simulator_without_backend_is_refused(tmp_path: Path) -> None:
    assert "needs `backend`" in error_of(write(tmp_path, {"simulator": {"kind": "llm"}}))


def test_dotted_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = write(tmp_path, {"stages": [{"kind": "data"}, {"kind": "dpo", "trainer": {"beta": 0.1}}]})
    recipe = load_recipe(path, ["reward.window=3", "tracking.wandb=offline", "stages.dpo.trainer.beta=0.5",
                                "stages.0.candidates=6"])
    assert recipe.reward.window == 3
    assert recipe.tracking.wandb == "offline"
    assert recipe.stages[1].trainer == {"beta": 0.5}  # type: ignore[union-attr]
    assert recipe.stages[0].candidates == 6  # type: ignore[union-attr]


def test_override_of_unknown_key_fails_like_the_file_would(tmp_path: Path) -> None:
    assert "did you mean 'reward.window'" in error_of(write(tmp_path, {}), ("reward.windows=3",))


def test_override_without_equals_sign_is_explained(tmp_path: Path) -> None:
    assert "has no '='" in error_of(write(tmp_path, {}), ("reward.window",))


@pytest.mark.parametrize(
    ("content", "expected"),
    [("a: [1, 2", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping")],
)
def test_unreadable_recipe_files_are_explained(tmp_path: Path, content: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, content))


def test_missing_recipe_file_is_explained(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "nope.yaml")


def test_invalid_utf8_recipe_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert "not valid UTF-8" in error_of(path)


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, {"reward": {"window": 1}}), ["seed=7"])
    saved = save_resolved(recipe, tmp_path / "run")
    again = load_recipe(saved)
    assert again.model_dump() == {**recipe.model_dump(), "name": recipe.name}
    assert again.seed == 7 and again.reward.window == 1


@pytest.mark.parametrize("path", sorted(recipes_root().rglob("*.yaml")), ids=lambda p: str(p.relative_to(recipes_root())))
def test_every_shipped_recipe_validates(path: Path) -> None:
    assert isinstance(load_recipe(path), Recipe)


def test_policy_dtype_that_differs_from_model_dtype_is_refused(tmp_path: Path) -> None:
    # model.dtype is what the policy loads with; a different policy.dtype used to be dropped without a word.
    message = error_of(write(tmp_path, {"model": {"dtype": "bfloat16"}, "policy": {"dtype": "float32"}}))
    assert str(tmp_path / "r.yaml") in message
    assert "policy.dtype is 'float32' but model.dtype is 'bfloat16'" in message
    assert "model.dtype: float32" in message


def test_policy_dtype_auto_or_equal_to_model_dtype_is_accepted(tmp_path: Path) -> None:
    follows = load_recipe(write(tmp_path, {"model": {"dtype": "bfloat16"}}))
    same = load_recipe(write(tmp_path, {"model": {"dtype": "bfloat16"}, "policy": {"dtype": "bfloat16"}}, "s.yaml"))
    assert (follows.policy.dtype, same.policy.dtype) == ("auto", "bfloat16")


@pytest.mark.parametrize(("kind", "key", "own"), [
    ("grpo", "max_tokens", "max_completion_length"),
    ("grpo", "temperature", "temperature"),
    ("online_dpo", "max_new_tokens", "max_new_tokens"),
])
def test_reply_length_or_temperature_in_generation_kwargs_is_refused(tmp_path: Path, kind: str, key: str,
                                                                      own: str) -> None:
    stage = {"kind": kind, "trainer": {"generation_kwargs": {key: 32, "top_k": 20}}}
    message = error_of(write(tmp_path, {"stages": [stage]}))
    assert f"'stages.0.trainer.generation_kwargs.{key}'" in message
    assert f"set trainer.{own} instead" in message


def test_generation_kwargs_without_reply_settings_are_accepted(tmp_path: Path) -> None:
    stage = {"kind": "grpo", "trainer": {"max_completion_length": 32, "generation_kwargs": {"top_k": 20}}}
    recipe = load_recipe(write(tmp_path, {"stages": [stage]}))
    assert recipe.stages[0].trainer["generation_kwargs"] == {"top_k": 20}


# --- extends: a recipe laid over another -------------------------------------------------------------------------


def test_an_extending_recipe_inherits_sections_key_by_key_but_not_name_or_stages(tmp_path: Path) -> None:
    write(tmp_path, {"name": "base", "output_dir": "runs/base", "tasks": {"name": "clarify-message", "limit": 8},
                     "reward": {"window": 2, "policy_temperature": 0.3},
                     "stages": [{"kind": "data"}]}, name="base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "tasks": {"limit": 32}, "stages": [{"kind": "eval"}]},
                  name="child.yaml")

    recipe = load_recipe(child)

    assert recipe.name == "child" and recipe.run_dir.name == "child"  # its own name and run directory
    assert (recipe.tasks.name, recipe.tasks.limit) == ("clarify-message", 32)
    assert (recipe.reward.window, recipe.reward.policy_temperature) == (2, 0.3)
    assert [s.kind for s in recipe.stages] == ["eval"]


def test_the_shipped_online_quickstart_uses_the_quickstarts_user_and_reward() -> None:
    online, offline = load_recipe(recipes_root() / "quickstart-online.yaml"), load_recipe(recipes_root() / "quickstart.yaml")

    assert online.simulator == offline.simulator and online.reward == offline.reward
    assert online.name == "quickstart-online" and online.model.name == "runs/quickstart/dpo/final"


def test_a_section_whose_kind_the_extending_recipe_changes_is_replaced_whole(tmp_path: Path) -> None:
    write(tmp_path, {"policy": {"kind": "openai", "model": "gpt-4o-mini", "price_per_million": [0.15, 0.6]},
                     "simulator": {"kind": "sharded", "mode": "withhold", "give_up": 0.5}}, name="base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "policy": {"kind": "hf"}, "simulator": {"max_turns": 2}},
                  name="child.yaml")

    recipe = load_recipe(child)

    assert (recipe.policy.kind, recipe.policy.model, recipe.policy.price_per_million) == ("hf", None, None)
    assert (recipe.simulator.mode, recipe.simulator.give_up, recipe.simulator.max_turns) == ("withhold", 0.5, 2)


@pytest.mark.parametrize(("extends", "message"), [
    ("missing.yaml", "names no file"),
    ("child.yaml", "circle"),
    (7, "must be the path of another recipe"),
])
def test_a_bad_extends_is_refused_naming_the_file_and_key(tmp_path: Path, extends: object, message: str) -> None:
    child = write(tmp_path, {"extends": extends}, name="child.yaml")

    error = error_of(child)

    assert message in error and f"{child}: extends" in error and "Fix:" in error
