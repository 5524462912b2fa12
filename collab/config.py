"""Recipes: the typed schema, YAML loading, dotted overrides and validation with clear errors.

A recipe is the only place where configuration enters collab; library code takes these typed objects. Every section
forbids unknown keys, so a misspelled key fails with the file, the key path and the closest valid key instead of
being silently ignored. Trainer arguments of training stages are checked against the TRL config class they will
construct.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import tempfile
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from collab.errors import CollabError
from collab.models import DEFAULT_MODEL


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackendConfig(Section):
    """Where text comes from: a local model (`hf`), a vLLM engine (`vllm`) or an OpenAI-compatible endpoint.

    Attributes:
        kind: `hf` (transformers, CPU or GPU), `vllm` (offline engine, GPU only) or `openai` (HTTP endpoint).
        model: Model name, local path or hub id (`hf`, `vllm`), or the endpoint's model name (`openai`). Empty means
            the recipe's policy model.
        base_url: Endpoint URL for `openai`, e.g. http://127.0.0.1:8000/v1. `base_url_env` takes precedence when set.
        base_url_env: Environment variable holding the endpoint URL (keeps cluster addresses out of recipes).
        api_key_env: Environment variable holding the API key. Keys are never written in recipes or run directories.
        concurrency: Requests in flight at once (`openai`), per backend and process: a request waiting out a retry
            backoff keeps its place, so a rate-limited endpoint is not sent more work meanwhile.
        requests_per_minute: Client-side rate limit (`openai`), counting every attempt including retries; request
            starts are spaced evenly 60 / requests_per_minute seconds apart. Empty for none. HTTP 429 answers are
            retried (waiting `Retry-After` when sent, capped at 30 s) and counted in the backend's `rate_limited`.
        timeout_s: Per-request timeout (`openai`).
        max_retries: Retries on 429, 5xx, timeouts and malformed replies before a request counts as failed.
        max_wall_s: Upper bound on one request's time including retries.
        price_per_million: USD per million (input, output) tokens, for cost accounting and `collab plan`.
        max_batch_size: Sequences per generation batch (`hf`). Rows that stop leave the batch, so a large batch costs
            no padding at its end; `max_batch_tokens` of the backend still bounds its memory.
        prefix_cache_mb: Memory for reusing attention states across calls (`hf`): a prompt that extends an earlier
            prompt and reply (the next turn of a rollout) or that several requests share (the S rollouts of a
            candidate) prefills only its new tokens, and a batch's prompts are prefilled in buckets of similar length
            (shared prefixes once) so that generation pads nothing. 0 turns it off. vLLM does this itself (prefix
            caching).
        dtype: Weights dtype (`hf`, `vllm`): auto, float32, bfloat16, float16.
        gpu_memory_utilization: Share of GPU memory vLLM may take.
        tensor_parallel_size: GPUs per vLLM engine.
        max_model_len: Tokens per sequence, prompt and reply together (`vllm`; required there). vLLM otherwise
            reserves KV-cache for the model's whole context (32k-128k), which wastes memory or fails to start. A state
            longer than max_model_len - max_new_tokens loses its oldest turns (the system prompt and the latest turns
            stay) and is counted in the backend's `prompts_truncated`; one that does not fit even so fails alone, as
            `PromptTooLong`, and never sinks its batch.
    """

    kind: Literal["hf", "vllm", "openai"] = "hf"
    model: str | None = None
    base_url: str | None = None
    base_url_env: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(16, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    max_wall_s: float | None = Field(600.0, gt=0)
    price_per_million: tuple[float, float] | None = None
    max_batch_size: int = Field(96, ge=1)
    prefix_cache_mb: int = Field(1024, ge=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=64)

    @model_validator(mode="after")
    def _openai_needs_model(self) -> BackendConfig:
        if self.kind == "openai" and not self.model:
            raise ValueError("an openai backend needs `model`: the model name the endpoint serves")
        if self.kind == "vllm" and self.max_model_len is None:
            # Required rather than guessed: a good value depends on turns x reply lengths and on GPU memory.
            raise ValueError(
                "a vllm backend needs `max_model_len` (tokens per sequence, prompt + reply); add e.g. "
                "`max_model_len: 16384` next to `kind: vllm` (at least max_turns x (user + policy max_new_tokens) "
                "plus the task prompt)"
            )
        return self


class LoraConfig(Section):
    """LoRA adapter settings (CollabLLM: r=32, alpha=16, dropout=0.1)."""

    r: int = Field(32, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class ModelConfig(Section):
    """The policy model.

    Attributes:
        name: Model name (`smollm2-135m-instruct`, `tiny-random-smollm2`), local directory or hub id.
        dtype: Weights dtype for training and local generation.
        lora: Train a LoRA adapter instead of all weights; empty for full fine-tuning.
        system_prompt: System prompt given to the policy in every conversation; empty for the model's default.
    """

    name: str = DEFAULT_MODEL
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lora: LoraConfig | None = None
    system_prompt: str | None = None


class TasksConfig(Section):
    """Which tasks the simulated users pursue.

    Attributes:
        name: A registered task set (`collab tasks list`) or a path to a JSONL file of task records.
        split: Split used by data generation and training stages.
        eval_split: Split used by evaluation stages.
        limit: Use only the first `limit` tasks; empty for all.
        seed: Seed of generated task sets.
    """

    name: str = "clarify-math"
    split: str = "train"
    eval_split: str = "test"
    limit: int | None = Field(None, ge=1)
    seed: int = 0


class SimulatorConfig(Section):
    """The simulated user.

    Attributes:
        kind: `sharded` (scripted Lost-in-Conversation policy, no LLM) or `llm` (CollabLLM-style prompted user).
        backend: The model playing the user (`llm` only).
        temperature: Sampling temperature of the LLM user (CollabLLM: 1.0).
        max_new_tokens: Longest user turn.
        max_reasks: Re-asks of an LLM user whose reply is unparseable or confused before the turn counts as failed.
        max_turns: User turns after which the user stops.
        mode: `sharded` only. `reveal` (Lost in Conversation: a wrong answer or any other turn is answered with the
            next withheld fact; for evaluation as in that paper) or `withhold` (a fact is given only to a question
            about it, a wrong answer is rejected without help; for training, where a guess must cost something).
        give_up: `sharded` in `withhold` mode: probability that the user ends the conversation after a wrong answer.
        recap: `sharded` only. When a question obtains the last withheld fact, the user also restates the whole
            request ("To sum up: ..."), as people do once everything is on the table; a small model uses a detail
            far better from one complete request than from a later turn (docs/tasks.md).
    """

    kind: Literal["sharded", "llm"] = "sharded"
    backend: BackendConfig | None = None
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    max_reasks: int = Field(2, ge=0, le=10)
    max_turns: int = Field(7, ge=1)
    mode: Literal["reveal", "withhold"] = "reveal"
    give_up: float = Field(0.0, ge=0, le=1)
    recap: bool = False

    @model_validator(mode="after")
    def _llm_needs_backend(self) -> SimulatorConfig:
        if self.kind == "llm" and self.backend is None:
            raise ValueError("an llm simulator needs `backend` (the model that plays the user)")
        if self.kind == "llm" and (self.mode != "reveal" or self.give_up or self.recap):
            raise ValueError("`mode`, `give_up` and `recap` belong to the scripted `sharded` user; an llm user has none")
        return self


class JudgeConfig(Section):
    """The interactivity judge; with `backend` empty, the rule-based elicitation proxy is used instead."""

    backend: BackendConfig | None = None
    max_reasks: int = Field(2, ge=0, le=10)


SERVE_BASE_URL_ENV = "COLLAB_SERVE_BASE_URL"  # set by slurm/serve.sh inside the job: http://NODE:PORT/v1
SERVE_API_KEY_ENV = "COLLAB_SERVE_API_KEY"    # a per-job key the server checks, so other users' jobs cannot use it


class ServeConfig(Section):
    """A self-hosted user simulator and judge: `collab launch slurm` starts `vllm serve` on node(s) of its own.

    With this section the backends of `roles` are pointed at the server (kind `openai`, base_url_env
    COLLAB_SERVE_BASE_URL, the served model, no price), so the recipe needs no external API. Outside
    `collab launch slurm`, run the server yourself and export COLLAB_SERVE_BASE_URL (docs/cluster.md).

    Attributes:
        model: Hub id or local path of the model to serve (the name requests use, too).
        nodes: Nodes of the job that serve; each runs one `vllm serve` replica (requests are spread over them).
        tensor_parallel_size: GPUs per replica; empty for all GPUs of a node (--gpus-per-node). Must divide them.
        max_model_len: Longest conversation (prompt + reply, tokens) the server accepts; also bounds its KV cache.
        port: Port of the server on its node(s).
        gpu_memory_utilization: Share of each GPU vLLM may take.
        roles: Which backends use the server: `simulator`, `judge` or both.
        wait_s: Longest wait for the server to answer /v1/models before the job fails (model download and load).
    """

    model: str
    nodes: int = Field(1, ge=1, le=16)
    tensor_parallel_size: int | None = Field(None, ge=1)
    max_model_len: int = Field(..., ge=256)
    port: int = Field(8100, ge=1024, le=65535)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    roles: list[Literal["simulator", "judge"]] = Field(default_factory=lambda: ["simulator", "judge"], min_length=1)
    wait_s: int = Field(1800, ge=30)


class RewardWeights(Section):
    """Weights of the MR components: R* = task * R_task + tokens * R_tokens + interactivity * R_int."""

    task: float = 1.0
    tokens: float = 1.0
    interactivity: float = 1.0


class RewardConfig(Section):
    """The multiturn-aware reward (MR).

    Attributes:
        window: Future turns rolled out after the candidate (paper: 2, i.e. user, assistant, user, assistant).
        samples: Rollouts per candidate, averaged (paper: S=3).
        token_lambda: Token cost per token (paper: 1e-4 document editing, 5e-4 code and math).
        token_mode: `window` counts tokens of the forward window (paper); `assistant` counts all assistant tokens of
            the conversation, uncapped (CollabLLM's later code).
        weights: Component weights.
        interactivity: `elicitation` (rule-based share of facts elicited by asking), `judge` (LLM judge; needs
            `judge.backend`) or `none`.
        policy_temperature: Sampling temperature of the policy's future turns.
        policy_max_new_tokens: Longest policy turn in rollouts.
        truncation_penalty: MR of a candidate cut off at the token limit; it gets no rollouts (as verl does).
            Empty (null): a cut-off candidate is rolled out and scored like any other (CollabLLM), for tasks whose
            result comes early in a reply, such as a message that states its details before it rambles.
    """

    window: int = Field(2, ge=0)
    samples: int = Field(3, ge=1)
    token_lambda: float = Field(5e-4, ge=0)
    token_mode: Literal["window", "assistant"] = "window"
    weights: RewardWeights = RewardWeights()
    interactivity: Literal["elicitation", "judge", "none"] = "elicitation"
    policy_temperature: float = Field(0.7, ge=0)
    policy_max_new_tokens: int = Field(256, ge=1)
    truncation_penalty: float | None = -1.0


class TrackingConfig(Section):
    """Experiment tracking.

    Attributes:
        wandb: `online`, `offline` (run files under the run directory) or `disabled`. WANDB_MODE overrides it.
        project: W&B project.
        entity: W&B entity (team); empty for the default.
        tags: W&B tags.
        sample_table_every: Log a table of sample conversations every N steps.
    """

    wandb: Literal["online", "offline", "disabled"] = "disabled"
    project: str = "collab"
    entity: str | None = None
    tags: list[str] = []
    sample_table_every: int = Field(50, ge=1)


class StageBase(Section):
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class TrainerStage(StageBase):
    """A training stage over a TRL trainer.

    Attributes:
        kind: sft, dpo, online_dpo, grpo or rloo.
        init_from: Start from the model saved by this earlier stage (by name); empty for `model.name`.
        data_from: Read training data produced by this earlier stage (by name).
        accelerate_config: Which file of accelerate_configs/ launches it (cpu, ddp, zero2, zero3, fsdp2).
        trainer: Arguments of the TRL config class (SFTConfig, DPOConfig, ...), checked against it.
        max_completion_length: dpo only: the loss sees the first N tokens of each chosen and rejected reply (empty:
            all of them). TRL 1.16's DPOConfig no longer has this; its `max_length` cuts prompt and reply together,
            so the kept share of a reply depends on its prompt's length. When the replies of a pair differ in how
            they open (one asks, one answers), a short window keeps the gradient on that decision rather than on the
            easy tokens after it, and shortens every step (docs/quickstart.md, rows 11-15).
        effective_batch_size: The batch one optimizer step sees (per_device_train_batch_size x
            gradient_accumulation_steps x processes). Empty: whatever those give. Stated, a launch on a number of
            GPUs where they do not multiply to it is refused with the numbers; `collab launch slurm --scale-batch`
            adjusts gradient_accumulation_steps instead (collab.train.batch).
        keep_checkpoints: What stays in `checkpoints/` once the stage has finished (`final/` always stays, and
            is what later stages and evaluations use): `none` removes every checkpoint, `last` keeps the newest
            complete one (to continue its optimizer from it; weight files identical to final/'s are hard-linked,
            not copied), `all` keeps what the Trainer left (`save_total_limit`). Checkpoints are resume points of an
            unfinished stage; each holds the Adam state, twice the size of fp32 weights (SmolLM2-135M: 1.6 GB each
            against 0.54 GB for final/), which is why a finished stage keeps none by default.
    """

    kind: Literal["sft", "dpo", "online_dpo", "grpo", "rloo"]
    init_from: str | None = None
    data_from: str | None = None
    accelerate_config: str = "cpu"
    trainer: dict[str, Any] = {}
    max_completion_length: int | None = Field(None, ge=1)
    effective_batch_size: int | None = Field(None, ge=1)
    keep_checkpoints: Literal["none", "last", "all"] = "none"

    @model_validator(mode="after")
    def _completion_window_is_dpo_only(self) -> TrainerStage:
        if self.max_completion_length is not None and self.kind != "dpo":
            raise ValueError(f"max_completion_length applies to dpo stages only, not {self.kind}; remove it")
        return self


class DataStage(StageBase):
    """MR-guided conversation synthesis (the CollabLLM data engine).

    Attributes:
        candidates: Candidate responses sampled per assistant turn.
        strategies: Candidate strategies cycled over the candidates: `sample`, `proactive`, `ask`, `answer`.
        max_turns: Assistant turns per conversation before it stops.
        prefills: Openings per strategy that replace the built-in ones (collab.candidates.PREFILLS) on every task
            kind, e.g. `{ask: ["Could you tell me"]}`; a candidate completes the opening its seed picks, and an empty
            list means no opening. One opening per action makes the chosen and rejected replies differ in the
            action rather than in phrasing.
        min_gap: DPO pairs whose MR gap is below this are dropped (CollabLLM: 0.02-0.05).
        pairs: `best_worst` makes one pair per turn (max MR vs min MR); `all` makes every pair whose gap is at
            least `min_gap`.
        min_chosen_mr: DPO pairs whose chosen reply scores below this are dropped (None keeps all). A reply that
            wins only because the other was worse (a needless question beating an answer cut off at the token
            limit) teaches the wrong behaviour; this keeps the pairs whose chosen reply is good on its own.
        balance_actions: Equalise the DPO pairs whose chosen reply asks a question and those whose chosen reply
            does not, dropping the smallest-gap pairs of the larger group (in each split). A policy that should ask
            only when something is missing must see both preferences equally often, or it learns the majority one
            as a habit (always ask) instead of the distinction.
        eval_fraction: Share of conversations held out as the evaluation split (split by conversation, never by
            row).
        temperature: Sampling temperature of the candidates.
        max_new_tokens: Longest candidate; a candidate that hits it is truncated and gets the truncation penalty.
        batch_conversations: Conversations advanced together; their records are saved after every turn.
    """

    kind: Literal["data"]
    candidates: int = Field(4, ge=2)
    strategies: list[Literal["sample", "proactive", "ask", "answer"]] = ["sample", "proactive", "ask", "answer"]
    max_turns: int = Field(4, ge=1)
    prefills: dict[Literal["sample", "proactive", "ask", "answer"], list[str]] = {}
    min_gap: float = Field(0.05, ge=0)
    pairs: Literal["best_worst", "all"] = "best_worst"
    min_chosen_mr: float | None = None
    balance_actions: bool = False
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    temperature: float = Field(0.8, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    batch_conversations: int = Field(64, ge=1)


class EvalStage(StageBase):
    """Evaluation of models on held-out tasks.

    Attributes:
        models: Models to compare: names, paths, or names of earlier training stages.
        runs: Conversations per task, with different seeds.
        mode: Lost-in-Conversation mode: `sharded` (facts revealed over turns), `full` (the goal at once) or
            `concat` (all shards in one message).
        tasks: Task set for this evaluation (name or JSONL path); empty for the recipe's `tasks.name`. A different
            set measures transfer to tasks the model was not trained on.
        split: Split of that task set; empty for the recipe's `tasks.eval_split`.
        limit: Number of tasks; empty for the recipe's `tasks.limit`.
        max_turns: Assistant turns per conversation; empty for the recipe's `simulator.max_turns`.
        max_new_tokens: Longest assistant turn; empty for the recipe's `reward.policy_max_new_tokens`.
        temperature: Sampling temperature of the assistant; empty for the recipe's `reward.policy_temperature`.
        batch_size: Conversations advanced together and saved together; empty for the recipe's
            `policy.max_batch_size`.
        resamples: Bootstrap resamples behind every confidence interval of the report.
        mr: Also score every conversation with the recipe's reward (`mr`, the conversation-level R*, computed by
            the same code as the training MR); false skips it and the judge calls it may cost.
    """

    kind: Literal["eval"]
    models: list[str] = []
    runs: int = Field(1, ge=1)
    mode: Literal["sharded", "full", "concat"] = "sharded"
    tasks: str | None = None
    split: str | None = None
    limit: int | None = Field(None, ge=1)
    max_turns: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    resamples: int = Field(2000, ge=1)
    mr: bool = True


Stage = Annotated[Union[TrainerStage, DataStage, EvalStage], Field(discriminator="kind")]


class Recipe(Section):
    """A complete run description: model, tasks, simulated user, reward, tracking and the stages to run in order."""

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs/{name}"
    model: ModelConfig = ModelConfig()
    policy: BackendConfig = BackendConfig()
    tasks: TasksConfig = TasksConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    judge: JudgeConfig = JudgeConfig()
    reward: RewardConfig = RewardConfig()
    tracking: TrackingConfig = TrackingConfig()
    serve: ServeConfig | None = None
    stages: list[Stage] = []

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        labels = [s.label for s in self.stages]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"stage names must be unique; give `name:` to the stages called {duplicates}")
        for i, stage in enumerate(self.stages):
            if isinstance(stage, TrainerStage):
                for ref in (stage.init_from, stage.data_from):
                    if ref is not None and ref not in labels[:i]:
                        raise ValueError(
                            f"stage '{stage.label}' refers to '{ref}', which is not an earlier stage ({labels[:i]})"
                        )
        if self.reward.interactivity == "judge" and self.judge.backend is None:
            raise ValueError("reward.interactivity is 'judge' but judge.backend is empty; set it or use 'elicitation'")
        if self.serve is not None:
            self._point_roles_at_server(self.serve)
        return self

    def _point_roles_at_server(self, serve: ServeConfig) -> None:
        """Aim the backends of serve.roles at the self-hosted server, keeping their limits (concurrency, retries)."""
        for role in dict.fromkeys(serve.roles):
            section = self.simulator if role == "simulator" else self.judge
            if section.backend is None:
                needs = "simulator.kind: llm and a simulator.backend" if role == "simulator" else "a judge.backend"
                raise ValueError(f"serve.roles lists '{role}', but the recipe has no {role} backend to point at the "
                                 f"server; drop '{role}' from serve.roles or give the recipe {needs}")
            # An offline engine of the recipe's own (hf, vllm) would become an HTTP client of the server instead.
            section.backend = section.backend.model_copy(update={
                "kind": "openai", "model": serve.model, "base_url": None, "base_url_env": SERVE_BASE_URL_ENV,
                "api_key_env": SERVE_API_KEY_ENV, "price_per_million": None})

    def stage(self, label: str) -> StageBase:
        for s in self.stages:
            if s.label == label:
                return s
        labels = [s.label for s in self.stages]
        close = difflib.get_close_matches(label, labels, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise CollabError(f"no stage named '{label}'", fix=f"{hint}use one of {labels}.")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


# --- trainer arguments -------------------------------------------------------------------------------------------

TRAINER_CONFIGS = {
    "sft": ("trl", "SFTConfig"),
    "dpo": ("trl", "DPOConfig"),
    "online_dpo": ("trl.experimental.online_dpo", "OnlineDPOConfig"),
    "grpo": ("trl", "GRPOConfig"),
    "rloo": ("trl", "RLOOConfig"),
}
# Validation checks keys and types, not this machine's hardware: a GPU recipe must validate on a laptop.
_HARDWARE_NEUTRAL = {"bf16": False, "fp16": False, "use_cpu": True, "tf32": None}


def trainer_config_class(kind: str) -> type:
    import importlib

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    module, name = TRAINER_CONFIGS[kind]
    return getattr(importlib.import_module(module), name)


@functools.lru_cache(maxsize=None)
def _field_adapters(cls: type) -> dict[str, TypeAdapter | None]:
    import dataclasses

    hints = typing.get_type_hints(cls)
    adapters: dict[str, TypeAdapter | None] = {}
    for f in dataclasses.fields(cls):
        try:
            adapters[f.name] = TypeAdapter(hints[f.name])
        except Exception:  # exotic annotations: the config's own __post_init__ still checks them
            adapters[f.name] = None
    return adapters


def coerce_trainer_args(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` with number-like strings turned into the numbers the TRL config expects.

    YAML reads `5e-5` (no dot) as the string "5e-5"; validation accepts it as a float, but the config would keep
    the string and training would fail deep inside the optimizer. Call after `check_trainer_args` passed."""
    adapters = _field_adapters(trainer_config_class(kind))
    out = dict(args)
    for key, value in args.items():
        adapter = adapters.get(key)
        if isinstance(value, str) and adapter is not None:
            converted = adapter.validate_python(value)
            if isinstance(converted, (int, float)) and not isinstance(converted, bool):
                out[key] = converted
    return out


def check_trainer_args(kind: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with a stage's `trainer` arguments as (key, message); empty when the TRL config accepts them."""
    cls = trainer_config_class(kind)
    adapters = _field_adapters(cls)
    problems: list[tuple[str, str]] = []
    for key, value in args.items():
        if key not in adapters:
            close = difflib.get_close_matches(key, list(adapters), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append((key, f"is not an argument of {cls.__name__}{hint}"))
        elif key == "output_dir":
            problems.append((key, "is set by collab (the stage's folder in the run directory); remove it"))
        elif adapters[key] is not None:
            try:
                adapters[key].validate_python(value)
            except ValidationError as e:
                problems.append((key, f"has the wrong type for {cls.__name__}: {e.errors()[0]['msg']}"))
    if problems:
        return problems
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _no_device_setup():
            warnings.simplefilter("ignore")
            cls(output_dir=tmp, **{**args, **_HARDWARE_NEUTRAL})
    except (TypeError, ValueError) as e:
        problems.append(("", f"{cls.__name__} rejects these arguments: {e}"))
    return problems


# Set by launchers (accelerate, torchrun, Slurm, MPI); seeing them, accelerate joins a process group.
_DISTRIBUTED_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                    "MV2_COMM_WORLD_SIZE", "ACCELERATE_USE_CPU")


@contextlib.contextmanager
def _no_device_setup() -> Iterator[None]:
    """Build a TRL config for validation without touching the process's devices.

    A TrainingArguments sets up accelerate's process-wide state when it is built. Under a launcher, the
    hardware-neutral `use_cpu=True` would then open a gloo process group in the trainer itself, and the real config
    built later would inherit it: on a GPU every gather went through gloo and failed. So the launcher's variables
    are hidden while the config is built, and the state it created is reset afterwards."""
    saved = {key: os.environ.pop(key) for key in _DISTRIBUTED_ENV if key in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


# --- loading -----------------------------------------------------------------------------------------------------


def _split_path(path: str) -> list[str]:
    return [p for p in path.split(".") if p]


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` to the raw recipe; the value is parsed as YAML (`3`, `true`, `[1, 2]`, `null`).

    A list element is addressed by index (`stages.1.trainer.beta=0.2`) or, for stages, by name (`stages.dpo...`).
    """
    if "=" not in assignment:
        raise CollabError(f"--set '{assignment}' has no '='", fix="write --set key.path=value.")
    path, _, text = assignment.partition("=")
    keys = _split_path(path.strip())
    if not keys:
        raise CollabError(f"--set '{assignment}' names no key", fix="write --set key.path=value.")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CollabError(f"--set {path}: the value is not valid YAML ({e})", fix="quote it.") from None
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            index = _list_index(node, key, ".".join(keys[: depth + 1]))
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise CollabError(
                f"--set {path}: '{'.'.join(keys[:depth])}' is a value, not a section", fix="check the key path."
            )
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def _list_index(node: list[Any], key: str, shown: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(node) <= index < len(node):
            return index
        raise CollabError(f"--set {shown}: index out of range (the list has {len(node)} items)")
    for i, item in enumerate(node):
        if isinstance(item, dict) and (item.get("name") or item.get("kind")) == key:
            return i
    raise CollabError(f"--set {shown}: no list item named '{key}'", fix="use its index or its name.")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe. Any problem is a CollabError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise CollabError(f"recipe file {path} does not exist{hint}", fix="give the path of a .yaml recipe "
                          "(`collab recipes list` shows the shipped ones).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CollabError(f"{path} is not valid UTF-8 (byte {e.start})", fix="save the recipe as UTF-8.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CollabError(f"{path} is not valid YAML: {e}", fix="correct the YAML syntax at that line.") from None
    if raw is None:
        # An empty file is a mistake (a save that failed, the wrong path), never a wish for every default.
        raise CollabError(f"recipe file {path} is empty", fix="write the recipe's sections into it (start from one "
                          "of `collab recipes list`, e.g. recipes/quickstart.yaml).")
    if not isinstance(raw, dict):
        raise CollabError(f"{path} must hold a mapping of sections, not a {type(raw).__name__}",
                          fix="start the file with keys such as `name:`, `model:`, `stages:`.")
    raw.setdefault("name", path.stem)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_recipe(raw, source=str(path))


def validate_recipe(raw: dict[str, Any], *, source: str = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise CollabError(format_validation_error(e, source)) from None
    problems = []
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, TrainerStage):
            for key, message in check_trainer_args(stage.kind, stage.trainer):
                where = f"stages.{i}.trainer" + (f".{key}" if key else "")
                problems.append(f"'{where}' (stage '{stage.label}') {message}")
    if problems:
        raise CollabError(f"{source}: " + "; ".join(problems).rstrip("?.") + ".",
                          fix="see the TRL documentation of that config class for valid arguments.")
    for stage in recipe.stages:
        if isinstance(stage, TrainerStage):
            stage.trainer = coerce_trainer_args(stage.kind, stage.trainer)
    return recipe


def format_validation_error(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        shown = _display_path(loc)
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1)
            parent = _display_path(loc[:-1])
            hint = f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""
            parts.append(f"unknown key '{shown}'{hint}; valid keys here: {', '.join(valid)}")
        elif item["type"] == "missing":
            parts.append(f"'{shown}' is required")
        else:
            got = item.get("input")
            got_text = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            parts.append(f"'{shown or '(top level)'}': {item['msg']} (got {got_text[:80]})")
    return f"{source}: invalid recipe: " + "; ".join(parts).rstrip(".") + "."


_STAGE_KINDS = {"sft", "dpo", "online_dpo", "grpo", "rloo", "data", "eval"}


def _display_path(loc: list[str]) -> str:
    # pydantic puts the discriminator value of a tagged union in the location: stages.0.dpo.trainer -> stages.0.trainer
    shown = [p for i, p in enumerate(loc) if not (p in _STAGE_KINDS and i > 0 and loc[i - 1].isdigit())]
    return ".".join(shown)


def _valid_keys(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for i, part in enumerate(loc):
        if part.isdigit() or model is None:
            continue
        if part in _STAGE_KINDS and i > 0 and loc[i - 1].isdigit():
            model = {"data": DataStage, "eval": EvalStage}.get(part, TrainerStage)
            continue
        field = model.model_fields.get(part)
        model = _section_of(field.annotation) if field else None
    return sorted(model.model_fields) if model is not None else []


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def save_resolved(recipe: Recipe, run_dir: Path) -> Path:
    """Write the fully resolved recipe into the run directory (atomically), so a resume uses exactly it."""
    from collab.io import atomic_write_text

    target = run_dir / "recipe.resolved.yaml"
    atomic_write_text(target, dump_recipe(recipe))
    return target


def recipes_root() -> Path:
    """The shipped recipes/ folder (next to the package in a source checkout), else ./recipes."""
    shipped = Path(__file__).resolve().parent.parent / "recipes"
    return shipped if shipped.is_dir() else Path("recipes")
