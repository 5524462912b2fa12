"""How the online stages are configured and dispatched: their trainer arguments (logging, vLLM server address,
refused vLLM settings), the launch through the same path as sft/dpo, and the trainer class's MR logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collab.config import Recipe, TrainerStage, validate_recipe
from collab.errors import BackendUnavailable, CollabError
from collab.stages import pipeline
from collab.train import driver
from collab.train.arguments import trainer_arguments
from collab.train.online import MRLoggingMixin, check_start, online_arguments, trainer_class
from collab.train.online_mask import GroupMaskMixin, PairMaskMixin

GRPO = {"num_generations": 2, "per_device_train_batch_size": 2}


def recipe(kind: str = "grpo", trainer: dict[str, Any] | None = None, **stage: Any) -> Recipe:
    return validate_recipe({"name": "online", "model": {"name": "tiny-random-smollm2"},
                            "stages": [{"kind": kind, "trainer": trainer if trainer is not None else GRPO, **stage}]})


def stage_of(r: Recipe) -> TrainerStage:
    stage = r.stages[0]
    assert isinstance(stage, TrainerStage)
    return stage


def test_online_stages_log_every_step_unless_the_recipe_says_otherwise(tmp_path: Path) -> None:
    r = recipe()
    assert trainer_arguments(r, stage_of(r), tmp_path, gpu=False, tracking=False)["logging_steps"] == 1
    r = recipe(trainer={**GRPO, "logging_steps": 5})
    assert trainer_arguments(r, stage_of(r), tmp_path, gpu=False, tracking=False)["logging_steps"] == 5


def test_vllm_server_address_comes_from_the_job_unless_the_recipe_names_its_server() -> None:
    stage = stage_of(recipe())
    env = {"COLLAB_VLLM_HOST": "gpu-node-4", "COLLAB_VLLM_PORT": "8123"}
    args = online_arguments(stage, {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "recipe-host"},
                            gpu=True, check_vllm=False, environ=env)
    assert (args["vllm_server_host"], args["vllm_server_port"]) == ("gpu-node-4", 8123)
    own = online_arguments(stage, {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://x:1"},
                           gpu=True, check_vllm=False, environ=env)
    assert "vllm_server_host" not in own
    colocate = online_arguments(stage, {"use_vllm": True}, gpu=True, check_vllm=False, environ=env)
    assert "vllm_server_host" not in colocate


@pytest.mark.parametrize(("args", "message"), [
    ({"use_vllm": True, "vllm_enable_sleep_mode": True}, "vllm_enable_sleep_mode is not supported"),
    ({"use_vllm": True, "vllm_tensor_parallel_size": 2}, "vllm_tensor_parallel_size > 1 is not supported"),
    ({"eval_strategy": "steps"}, "online stages have no evaluation split"),
    ({"ds3_gather_for_generation": False}, "ds3_gather_for_generation: false is not supported"),
])
def test_settings_mr_rollouts_cannot_work_with_are_refused_with_a_fix(args: dict[str, Any], message: str) -> None:
    with pytest.raises(CollabError, match=f"{message}.*Fix: "):
        online_arguments(stage_of(recipe()), dict(args), gpu=True, check_vllm=False)


def test_server_mode_with_tensor_parallel_server_is_allowed() -> None:
    args = online_arguments(stage_of(recipe()), {"use_vllm": True, "vllm_mode": "server",
                                                 "vllm_tensor_parallel_size": 2}, gpu=True, check_vllm=False,
                            environ={})
    assert args["vllm_tensor_parallel_size"] == 2


def test_use_vllm_on_a_machine_without_gpu_fails_before_launch(tmp_path: Path) -> None:
    r = recipe(trainer={**GRPO, "use_vllm": True})
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU.*use_vllm: false"):
        trainer_arguments(r, stage_of(r), tmp_path, gpu=False, tracking=False)


def test_use_vllm_without_the_vllm_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendUnavailable, match=r"vllm package is not installed.*collab\[vllm\]"):
        online_arguments(stage_of(recipe()), {"use_vllm": True}, gpu=True)


def test_online_stage_is_launched_like_the_offline_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = recipe()
    launched: list[str] = []

    def fake_launch(recipe: Recipe, stage: TrainerStage, run_dir: Path, **kwargs: Any) -> Path:
        launched.append(stage.label)
        return run_dir / stage.label / "final"

    monkeypatch.setattr(pipeline, "run_trainer_stage", fake_launch)
    pipeline.run_stage(r, stage_of(r), tmp_path)

    assert launched == ["grpo"]
    assert (tmp_path / "grpo" / "DONE").is_file()


def test_online_stage_needs_no_data_from_before_launch(tmp_path: Path) -> None:
    driver._preflight(recipe(), stage_of(recipe()), tmp_path, gpu=False)  # no error
    dpo = validate_recipe({"model": {"name": "tiny-random-smollm2"}, "stages": [{"kind": "dpo"}]})
    with pytest.raises(CollabError, match="has no data_from"):
        driver._preflight(dpo, dpo.stages[0], tmp_path, gpu=False)  # type: ignore[arg-type]


def test_kl_towards_a_merged_adapter_start_is_refused(tmp_path: Path) -> None:
    adapter = tmp_path / "sft" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    config = type("Config", (), {"beta": 0.04})()
    with pytest.raises(CollabError, match="KL term .*beta=0.04.*set model.lora"):
        check_start(recipe(), stage_of(recipe()), str(adapter), config)
    check_start(recipe(), stage_of(recipe()), str(adapter), type("Config", (), {"beta": 0.0})())
    check_start(recipe("online_dpo", {}), stage_of(recipe("online_dpo", {})), str(adapter), config)


@pytest.mark.parametrize(("kind", "mask", "base"), [("grpo", GroupMaskMixin, "GRPOTrainer"),
                                                    ("rloo", GroupMaskMixin, "RLOOTrainer"),
                                                    ("online_dpo", PairMaskMixin, "OnlineDPOTrainer")])
def test_trainer_class_is_trls_with_mr_logging_and_the_mr_mask(kind: str, mask: type, base: str) -> None:
    cls = trainer_class(kind)
    assert cls.__mro__[1:3] == (MRLoggingMixin, mask) and cls.__mro__[3].__name__ == base


def test_mr_breakdown_is_added_to_training_logs_only() -> None:
    class Base:
        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            self.logged = dict(logs)

    class Reward:
        def drain(self, gather: Any) -> dict[str, float]:
            assert gather([1]) == [[1]]  # a single process gathers its own totals
            return {"mr/mean": 0.25}

    class Trainer(MRLoggingMixin, Base):
        accelerator = type("Acc", (), {"num_processes": 1})()

    trainer = Trainer()
    trainer.mr_reward = Reward()
    trainer.log({"loss": 1.0})
    assert trainer.logged == {"loss": 1.0, "mr/mean": 0.25}
    trainer.log({"eval_loss": 1.0})
    assert trainer.logged == {"eval_loss": 1.0}
