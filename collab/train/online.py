"""The online stages: `online_dpo` (TRL OnlineDPOTrainer), `grpo` (GRPOTrainer) and `rloo` (RLOOTrainer), all
rewarded by MR computed on the fly with the policy being trained (docs/online.md).

They run exactly like the offline stages: `collab train` launches `accelerate launch -m collab.train.rank_main` (same
checkpoints, resume from the newest complete one, preemption handling, one W&B run per stage), and every rank
builds the trainer with `build_online_trainer`, as collab.stages.kinds says. What differs is here:

- the data: conversation states from the recipe's tasks (`collab.train.online_data`), not a preference dataset;
- the reward: `collab.train.online_reward` (one batched MR call per generation batch), attached after the trainer
  exists, because its future assistant turns come from the trainer's live model or its vLLM engine
  (`collab.train.online_policy`);
- the trainer class: TRL's, with `log` extended to add the MR breakdown (`mr/...`) to every logged step, and failed
  or tied MR left out of the loss (`collab.train.online_mask`).

PPO: TRL 1.16 has no PPOTrainer; collab's PPO path is `grpo` (or `rloo`) with `num_iterations > 1`, which reuses
each generation batch for several optimizer steps with PPO's clipped importance ratio (`epsilon`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collab.config import Recipe, TrainerStage
from collab.errors import CollabError
from collab.stages.kinds import KINDS, load
from collab.train.inputs import TrainerInputs

# --- trainer arguments -------------------------------------------------------------------------------------------


def online_arguments(stage: TrainerStage, args: dict[str, Any], *, gpu: bool, check_vllm: bool = True,
                     environ: dict[str, str] | None = None) -> dict[str, Any]:
    """What collab adds to and refuses in an online stage's trainer arguments (the online kinds' `extra_arguments`,
    called by `collab.train.arguments.trainer_arguments`).

    - `logging_steps` defaults to 1: the MR breakdown is logged every step.
    - vLLM server mode takes the server's address from COLLAB_VLLM_HOST / COLLAB_VLLM_PORT (the job script's
      choice wins over the recipe's), unless the recipe names its own server with `vllm_server_base_url`.
    - Refused, with the fix: evaluation (online stages have no eval split; evaluate with an eval stage),
      `ds3_gather_for_generation: false` (ranks generate different numbers of rollout batches),
      `vllm_enable_sleep_mode` (TRL puts the engine to sleep right after sampling, before the reward's rollouts),
      colocated vLLM with `vllm_tensor_parallel_size > 1` (ranks of a tensor-parallel group would have to generate
      the same rollouts in lockstep), and `use_vllm` where vLLM cannot run (no GPU, or no vllm package; skipped
      with `check_vllm=False`).
    """
    from collab.launch import vllm_server_args
    from collab.train.online_policy import policy_mode, require_vllm

    where = f"stage '{stage.label}'"
    args.setdefault("logging_steps", 1)
    if args.get("eval_strategy", "no") != "no":
        raise CollabError(f"{where}: online stages have no evaluation split, so eval_strategy must be 'no'",
                          fix="remove eval_strategy and evaluate the stage's model with an `eval` stage.")
    mode = policy_mode(args)
    if mode == "hf":
        if args.get("ds3_gather_for_generation") is False:
            raise CollabError(f"{where}: ds3_gather_for_generation: false is not supported with MR rewards: each "
                              "rank generates a different number of rollout batches, and ZeRO-3 without gathered "
                              "parameters needs every rank in every forward pass",
                              fix="remove ds3_gather_for_generation, or generate with vLLM (use_vllm: true).")
        return args
    if args.get("vllm_enable_sleep_mode"):
        raise CollabError(f"{where}: vllm_enable_sleep_mode is not supported with MR rewards: TRL puts the engine to "
                          "sleep right after sampling, and the reward's rollouts need it awake with current weights",
                          fix="remove vllm_enable_sleep_mode (or lower vllm_gpu_memory_utilization to make room).")
    if mode == "vllm-colocate" and int(args.get("vllm_tensor_parallel_size", 1)) > 1:
        raise CollabError(f"{where}: colocated vLLM with vllm_tensor_parallel_size > 1 is not supported with MR "
                          "rewards (each rank's rollouts differ, a tensor-parallel group must generate together)",
                          fix="use vllm_tensor_parallel_size: 1, or vllm_mode: server with a tensor-parallel server.")
    if mode == "vllm-server" and not args.get("vllm_server_base_url"):
        args.update(vllm_server_args(environ))
    if check_vllm:
        require_vllm(stage.kind, gpu=gpu)
    return args


# --- the trainer -------------------------------------------------------------------------------------------------


class MRLoggingMixin:
    """Adds the MR breakdown of the steps since the last log to every training log (all ranks take part in the
    merge, as they all call `log` at the same steps)."""

    mr_reward: Any = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.mr_reward is not None and not any(key.startswith("eval_") for key in logs):
            logs.update(self.mr_reward.drain(self._gather_totals))
        super().log(logs, start_time)  # type: ignore[misc]

    def _gather_totals(self, totals: Any) -> list[Any]:
        accelerator = self.accelerator  # type: ignore[attr-defined]
        if accelerator.num_processes == 1:
            return [totals]
        from accelerate.utils import gather_object

        return gather_object([totals])


def with_mr(base: type, kind: str) -> type:
    """`base` (TRL's trainer of `kind`) with the MR breakdown in its logs and failed or tied MR left out of its loss
    (per pair or per group, as the kind's `online` entry says)."""
    from collab.train.online_mask import GroupMaskMixin, PairMaskMixin

    mask = PairMaskMixin if KINDS[kind].online == "pairs" else GroupMaskMixin
    return type(f"MR{base.__name__}", (MRLoggingMixin, mask, base), {})


def trainer_class(kind: str) -> type:
    """The trainer class an online stage of `kind` trains with: the table's TRL trainer, `with_mr`."""
    return with_mr(load(KINDS[kind].trainer), kind)


def stop_ids(trainer: Any) -> list[int]:
    ids = list(getattr(trainer, "eos_token_ids", None) or [])
    tokenizer = trainer.processing_class
    return ids or [tokenizer.eos_token_id]


def check_start(recipe: Recipe, stage: TrainerStage, source: str, config: Any) -> None:
    """GRPO/RLOO build their KL reference from the model's hub id / path, which is the base model after a merged
    adapter start: refuse instead of silently regularising towards the wrong model."""
    from collab.models import is_adapter

    if KINDS[stage.kind].online == "groups" and getattr(config, "beta", 0.0) and recipe.model.lora is None \
            and is_adapter(source):
        raise CollabError(
            f"stage '{stage.label}' starts from the adapter {source} merged into its base, with a KL term "
            f"(beta={config.beta}); TRL would take the reference from the base model, not from the merged start",
            fix="keep training the adapter (set model.lora), or set beta: 0.0 for this stage.",
        )


def attach_reward(trainer: Any, function: Any, recipe: Recipe, stage: TrainerStage, run_dir: Path) -> None:
    """Give the reward function its MR: the live policy (of the built trainer), the simulator and the judge."""
    from collab.factory import build_reward, build_simulator, cache_for
    from collab.train.online_policy import make_live_policy
    from collab.train.tracking import run_name

    cache = cache_for(run_dir)
    policy = make_live_policy(trainer, name=run_name(recipe, stage), max_batch_size=recipe.policy.max_batch_size,
                              concurrency=recipe.policy.concurrency)
    reward = build_reward(recipe, policy.backend, build_simulator(recipe, cache), cache)
    function.attach(reward, policy, stop_ids(trainer))
    trainer.mr_reward = function


def build_online_trainer(trainer_class: type, inputs: TrainerInputs) -> Any:
    """The online kinds' `build_trainer` (collab.stages.kinds): TRL's trainer `with_mr`, rewarded by MR."""
    from accelerate import PartialState

    from collab.run.layout import StagePaths
    from collab.train.online_data import load_tasks
    from collab.train.online_reward import AsyncMRRewardFunction, MRRewardFunction, SampleLog

    recipe, stage, run_dir, setup = inputs.recipe, inputs.stage, inputs.run_dir, inputs.setup
    check_start(recipe, stage, setup.source, inputs.config)
    state = PartialState()
    samples = None
    if state.is_main_process:
        samples = SampleLog(StagePaths(run_dir, stage.label).root / "samples.jsonl",
                            recipe.tracking.sample_table_every)
    pairs = KINDS[stage.kind].online == "pairs"
    function_class = MRRewardFunction if pairs else AsyncMRRewardFunction
    function = function_class(tasks={t.id: t for t in load_tasks(recipe)}, seed=recipe.seed,
                              rank=state.process_index, samples=samples)
    kwargs: dict[str, Any] = {}
    if pairs and setup.ref_model is not None:
        kwargs["ref_model"] = setup.ref_model
    trainer = with_mr(trainer_class, stage.kind)(
        model=setup.model, reward_funcs=[function], args=inputs.config, train_dataset=inputs.data["train"],
        processing_class=setup.tokenizer, peft_config=setup.peft_config, callbacks=inputs.callbacks, **kwargs,
    )
    attach_reward(trainer, function, recipe, stage, run_dir)
    return trainer
