"""Recipes: the typed schema (schema.py), YAML loading and `--set` overrides (load.py) and the check of training
stages' TRL arguments (trainer_args.py). Import the public names from here: `from collab.config import Recipe`."""

from collab.config.load import (
    apply_override,
    dump_recipe,
    format_validation_error,
    load_recipe,
    recipes_root,
    save_resolved,
    validate_recipe,
)
from collab.config.schema import (
    SERVE_API_KEY_ENV,
    SERVE_BASE_URL_ENV,
    BackendConfig,
    DataStage,
    EvalStage,
    JudgeConfig,
    LoraConfig,
    ModelConfig,
    Recipe,
    RewardConfig,
    RewardWeights,
    Section,
    ServeConfig,
    SimulatorConfig,
    Stage,
    StageBase,
    TasksConfig,
    TrackingConfig,
    TrainerStage,
)
from collab.config.trainer_args import (
    check_trainer_args,
    coerce_trainer_args,
    trainer_args_with_defaults,
    trainer_config_class,
)

__all__ = [
    "SERVE_API_KEY_ENV", "SERVE_BASE_URL_ENV", "BackendConfig", "DataStage", "EvalStage",
    "JudgeConfig", "LoraConfig", "ModelConfig", "Recipe", "RewardConfig", "RewardWeights", "Section", "ServeConfig",
    "SimulatorConfig", "Stage", "StageBase", "TasksConfig", "TrackingConfig", "TrainerStage", "apply_override",
    "check_trainer_args", "coerce_trainer_args", "dump_recipe", "format_validation_error", "load_recipe",
    "recipes_root", "save_resolved", "trainer_args_with_defaults", "trainer_config_class", "validate_recipe",
]
