"""The recipe schema: the typed sections and stages a recipe is made of.

A recipe is the only place where configuration enters collab; library code takes these typed objects. Every section
forbids unknown keys, so a misspelled key fails with the file, the key path and the closest valid key instead of
being silently ignored (collab.config.load formats those errors).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collab.errors import CollabError
from collab.models import DEFAULT_MODEL
from collab.stages.kinds import KINDS, TRAINER_KINDS


class Section(BaseModel):
    """A recipe section: unknown keys are refused, and assignments are validated like loaded values."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class BackendConfig(Section):
    """Where text comes from: a local model (`hf`), a vLLM engine (`vllm`) or an OpenAI-compatible endpoint."""

    kind: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="`hf` (transformers, CPU or GPU), `vllm` (offline engine, GPU only) or `openai` (HTTP "
        "endpoint).")
    model: str | None = Field(
        None, description="Model name, local path or hub id (`hf`, `vllm`), or the endpoint's model name (`openai`). "
        "Empty means the recipe's policy model (`model.name`).")
    base_url: str | None = Field(
        None, description="Endpoint URL for `openai`, e.g. http://127.0.0.1:8000/v1. `base_url_env` takes precedence "
        "when set.")
    base_url_env: str | None = Field(
        None, description="Environment variable holding the endpoint URL (keeps cluster addresses out of recipes).")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key. Keys are never written in recipes or "
        "run directories.")
    concurrency: int = Field(
        16, ge=1, description="Requests in flight at once (`openai`), per backend and process: a request waiting out "
        "a retry backoff keeps its place, so a rate-limited endpoint is not sent more work meanwhile.")
    requests_per_minute: float | None = Field(
        None, gt=0, description="Client-side rate limit (`openai`), counting every attempt including retries; request "
        "starts are spaced evenly 60 / requests_per_minute seconds apart. Empty for none. HTTP 429 answers are "
        "retried (waiting `Retry-After` when sent, capped at 30 s) and counted in the backend's `rate_limited`.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout in seconds (`openai`).")
    max_retries: int = Field(
        4, ge=0, le=20, description="Retries on 429, 5xx, timeouts and malformed replies before a request counts as "
        "failed.")
    max_wall_s: float | None = Field(
        600.0, gt=0, description="Upper bound in seconds on one request's time including retries; empty for none.")
    price_per_million: tuple[float, float] | None = Field(
        None, description="USD per million (input, output) tokens, for cost accounting and `collab plan`; empty for "
        "free (a local model).")
    max_batch_size: int = Field(
        96, ge=1, description="Sequences per generation batch (`hf`). Rows that stop leave the batch, so a large batch "
        "costs no padding at its end; `max_batch_tokens` of the backend still bounds its memory.")
    prefix_cache_mb: int = Field(
        1024, ge=0, description="Memory in MB for reusing attention states across calls (`hf`): a prompt that extends "
        "an earlier prompt and reply (the next turn of a rollout) or that several requests share (the S rollouts of "
        "a candidate) prefills only its new tokens, and a batch's prompts are prefilled in buckets of similar length "
        "(shared prefixes once) so that generation pads nothing. 0 turns it off. vLLM does this itself (prefix "
        "caching).")
    dtype: _Dtype = Field(
        "auto", description="Weights dtype (`hf`, `vllm`): auto, float32, bfloat16, float16. For the recipe's "
        "`policy` backend, `model.dtype` is the one place: leave this `auto` (it follows `model.dtype`) or set it "
        "to the same value; a different value is refused.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine.")
    max_model_len: int | None = Field(
        None, ge=64, description="Tokens per sequence, prompt and reply together (`vllm`; required there). vLLM "
        "otherwise reserves KV-cache for the model's whole context (32k-128k), which wastes memory or fails to "
        "start. A state longer than max_model_len - max_new_tokens loses its oldest turns (the system prompt and the "
        "latest turns stay) and is counted in the backend's `prompts_truncated`; one that does not fit even so fails "
        "alone, as `PromptTooLong`, and never sinks its batch.")

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
    """LoRA adapter settings, passed to peft.LoraConfig; the defaults are CollabLLM's (r=32, alpha=16, dropout=0.1)."""

    r: int = Field(32, ge=1, description="Rank of the adapter's low-rank update matrices.")
    alpha: int = Field(
        16, ge=1, description="Scaling of the update (peft's `lora_alpha`); the update is multiplied by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter's input (peft's `lora_dropout`).")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get an adapter: module names, or `all-linear` for every linear layer "
        "except the output head.")


class ModelConfig(Section):
    """The policy model: the one that is trained, sampled in rollouts and evaluated."""

    name: str = Field(
        DEFAULT_MODEL, description="Model name (`smollm2-135m-instruct`, `tiny-random-smollm2`), local directory or "
        "hub id.")
    dtype: _Dtype = Field(
        "auto", description="Weights dtype for training and local generation (the one place for the policy's dtype: "
        "the `policy` backend follows it).")
    lora: LoraConfig | None = Field(
        None, description="Train a LoRA adapter instead of all weights; empty for full fine-tuning.")
    system_prompt: str | None = Field(
        None, description="System prompt given to the policy in every conversation; empty for the model's default.")


class TasksConfig(Section):
    """Which tasks the simulated users pursue."""

    name: str = Field(
        "clarify-math", description="A registered task set (`collab tasks list`) or a path to a JSONL file of task "
        "records.")
    split: str = Field("train", description="Split used by data generation and training stages.")
    eval_split: str = Field("test", description="Split used by evaluation stages.")
    limit: int | None = Field(None, ge=1, description="Use only the first `limit` tasks; empty for all.")
    seed: int = Field(
        0, description="Seed of generated task sets; fixed sets ignore it so their test split never moves.")


class SimulatorConfig(Section):
    """The simulated user."""

    kind: Literal["sharded", "llm"] = Field(
        "sharded", description="`sharded` (scripted Lost-in-Conversation policy, no LLM) or `llm` (CollabLLM-style "
        "prompted user).")
    backend: BackendConfig | None = Field(None, description="The model playing the user (`llm` only).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the LLM user (CollabLLM: 1.0).")
    max_new_tokens: int = Field(256, ge=1, description="Longest user turn, in tokens (`llm` only).")
    max_reasks: int = Field(
        2, ge=0, le=10, description="Re-asks of an LLM user whose reply is unparseable or confused before the turn "
        "counts as failed.")
    max_turns: int = Field(7, ge=1, description="User turns after which the user stops.")
    mode: Literal["reveal", "withhold"] = Field(
        "reveal", description="`sharded` only. `reveal` (Lost in Conversation: a wrong answer or any other turn is "
        "answered with the next withheld fact; for evaluation as in that paper) or `withhold` (a fact is given only "
        "to a question about it, a wrong answer is rejected without help; for training, where a guess must cost "
        "something).")
    give_up: float = Field(
        0.0, ge=0, le=1, description="`sharded` in `withhold` mode: probability that the user ends the conversation "
        "after a wrong answer.")
    recap: bool = Field(
        False, description="`sharded` only. When a question obtains the last withheld fact, the user also restates "
        "the whole request (\"To sum up: ...\"), as people do once everything is on the table; a small model uses a "
        "detail far better from one complete request than from a later turn (docs/tasks.md).")

    @model_validator(mode="after")
    def _llm_needs_backend(self) -> SimulatorConfig:
        if self.kind == "llm" and self.backend is None:
            raise ValueError("an llm simulator needs `backend` (the model that plays the user)")
        if self.kind == "llm" and (self.mode != "reveal" or self.give_up or self.recap):
            raise ValueError("`mode`, `give_up` and `recap` belong to the scripted `sharded` user; an llm user has none")
        return self


class JudgeConfig(Section):
    """The interactivity judge; with `backend` empty, the rule-based elicitation proxy is used instead."""

    backend: BackendConfig | None = Field(
        None, description="The LLM that judges interactivity (needed by `reward.interactivity: judge`); empty for "
        "none.")
    max_reasks: int = Field(
        2, ge=0, le=10, description="Re-asks of the judge when its verdict cannot be parsed, before the score counts "
        "as failed.")


SERVE_BASE_URL_ENV = "COLLAB_SERVE_BASE_URL"  # set by slurm/serve.sh inside the job: http://NODE:PORT/v1
SERVE_API_KEY_ENV = "COLLAB_SERVE_API_KEY"    # a per-job key the server checks, so other users' jobs cannot use it


class ServeConfig(Section):
    """A self-hosted user simulator and judge: `collab launch slurm` starts `vllm serve` on node(s) of its own.

    With this section the backends of `roles` are pointed at the server (kind `openai`, base_url_env
    COLLAB_SERVE_BASE_URL, the served model, no price), so the recipe needs no external API. Outside
    `collab launch slurm`, run the server yourself and export COLLAB_SERVE_BASE_URL (docs/cluster.md).
    """

    model: str = Field(..., description="Hub id or local path of the model to serve (the name requests use, too).")
    nodes: int = Field(
        1, ge=1, le=16, description="Nodes of the job that serve; each runs one `vllm serve` replica (requests are "
        "spread over them).")
    tensor_parallel_size: int | None = Field(
        None, ge=1, description="GPUs per replica; empty for all GPUs of a node (--gpus-per-node). Must divide them.")
    max_model_len: int = Field(
        ..., ge=256, description="Longest conversation (prompt + reply, tokens) the server accepts; also bounds its KV "
        "cache.")
    port: int = Field(8100, ge=1024, le=65535, description="Port of the server on its node(s).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of each GPU vLLM may take.")
    roles: list[Literal["simulator", "judge"]] = Field(
        default_factory=lambda: ["simulator", "judge"], min_length=1,
        description="Which backends use the server: `simulator`, `judge` or both.")
    wait_s: int = Field(
        1800, ge=30, description="Longest wait in seconds for the server to answer /v1/models before the job fails "
        "(model download and load).")


class RewardWeights(Section):
    """Weights of the MR components: R* = task * R_task + tokens * R_tokens + interactivity * R_int."""

    task: float = Field(1.0, description="Weight of task success (R_task).")
    tokens: float = Field(1.0, description="Weight of the token cost (R_tokens, already negative and scaled by "
                          "`reward.token_lambda`).")
    interactivity: float = Field(1.0, description="Weight of the interactivity score (R_int).")


class RewardConfig(Section):
    """The multiturn-aware reward (MR), and the policy's sampling settings that every stage starts from.

    `policy_max_new_tokens` and `policy_temperature` are the recipe's one place for the policy's reply length and
    temperature; a stage overrides them for its own sampling only (see the stage fields that name them).
    """

    window: int = Field(
        2, ge=0, description="Future turns rolled out after the candidate (paper: 2, i.e. user, assistant, user, "
        "assistant).")
    samples: int = Field(3, ge=1, description="Rollouts per candidate, averaged (paper: S=3).")
    token_lambda: float = Field(
        5e-4, ge=0, description="Token cost per token (paper: 1e-4 document editing, 5e-4 code and math).")
    token_mode: Literal["window", "assistant"] = Field(
        "window", description="`window` counts tokens of the forward window (paper); `assistant` counts all "
        "assistant tokens of the conversation, uncapped (CollabLLM's later code).")
    weights: RewardWeights = Field(default_factory=RewardWeights, description="Component weights.")
    interactivity: Literal["elicitation", "judge", "none"] = Field(
        "elicitation", description="`elicitation` (rule-based share of facts elicited by asking), `judge` (LLM judge; "
        "needs `judge.backend`) or `none`.")
    policy_temperature: float = Field(
        0.7, ge=0, description="The policy's sampling temperature: its future turns in MR rollouts, `collab "
        "simulate`, and evaluation unless an eval stage sets `temperature`. Stages that sample candidates set their own (`temperature` of a data stage, "
        "`trainer.temperature` of an online stage).")
    policy_max_new_tokens: int = Field(
        256, ge=1, description="The policy's reply length in tokens, the recipe's default: its future turns in MR "
        "rollouts, `collab simulate`, and evaluation unless an eval stage sets `max_new_tokens`. Data stages "
        "(`max_new_tokens`) and online stages (`trainer.max_completion_length`, `trainer.max_new_tokens` for "
        "online_dpo) set the length of the candidates they sample.")
    truncation_penalty: float | None = Field(
        -1.0, description="MR of a candidate cut off at the token limit; it gets no rollouts (as verl does). Empty "
        "(null): a cut-off candidate is rolled out and scored like any other (CollabLLM), for tasks whose result "
        "comes early in a reply, such as a message that states its details before it rambles.")


class TrackingConfig(Section):
    """Experiment tracking."""

    wandb: Literal["online", "offline", "disabled"] = Field(
        "disabled", description="`online`, `offline` (run files under the run directory) or `disabled`. WANDB_MODE "
        "overrides it.")
    project: str = Field("collab", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team); empty for the default.")
    tags: list[str] = Field(default_factory=list, description="W&B tags.")
    sample_table_every: int = Field(
        50, ge=1, description="Log a table of sample conversations every N steps.")


class StageBase(Section):
    """What every stage has: a name that later stages and `--stage` refer to."""

    name: str | None = Field(
        None, description="The stage's name, unique in the recipe: later stages refer to it (`init_from`, "
        "`data_from`, eval `models`), `--stage` selects it, and its folder in the run directory is named after it. "
        "Empty for the stage's kind.")

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class TrainerStage(StageBase):
    """A training stage over a TRL trainer."""

    kind: Literal[TRAINER_KINDS] = Field(  # type: ignore[valid-type]  # the trainer kinds of collab.stages.kinds
        ..., description=", ".join(TRAINER_KINDS) + " (collab.stages.kinds).")
    init_from: str | None = Field(
        None, description="Start from the model saved by this earlier stage (by name); empty for `model.name`.")
    data_from: str | None = Field(
        None, description="Read training data produced by this earlier stage (by name).")
    accelerate_config: str = Field(
        "cpu", description="Which file of accelerate_configs/ launches it (cpu, ddp, zero2, zero3, fsdp2).")
    trainer: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the TRL config class (SFTConfig, DPOConfig, ...), checked "
        "against it. In online stages, the reply length and temperature of the candidates are TRL's own keys "
        "(`max_completion_length`, or `max_new_tokens` for online_dpo, and `temperature`); setting them again in "
        "`generation_kwargs` is refused.")
    max_completion_length: int | None = Field(
        None, ge=1, description="dpo only: the loss sees the first N tokens of each chosen and rejected reply (empty: "
        "all of them). TRL 1.16's DPOConfig no longer has this; its `max_length` cuts prompt and reply together, so "
        "the kept share of a reply depends on its prompt's length. When the replies of a pair differ in how they "
        "open (one asks, one answers), a short window keeps the gradient on that decision rather than on the easy "
        "tokens after it, and shortens every step (docs/quickstart.md, rows 11-15). Not a generation length: dpo "
        "samples nothing.")
    effective_batch_size: int | None = Field(
        None, ge=1, description="The batch one optimizer step sees (per_device_train_batch_size x "
        "gradient_accumulation_steps x processes). Empty: whatever those give. Stated, a launch on a number of GPUs "
        "where they do not multiply to it is refused with the numbers; `collab launch slurm --scale-batch` adjusts "
        "gradient_accumulation_steps instead (collab.train.batch).")
    keep_checkpoints: Literal["none", "last", "all"] = Field(
        "none", description="What stays in `checkpoints/` once the stage has finished (`final/` always stays, and is "
        "what later stages and evaluations use): `none` removes every checkpoint, `last` keeps the newest complete "
        "one (to continue its optimizer from it; weight files identical to final/'s are hard-linked, not copied), "
        "`all` keeps what the Trainer left (`save_total_limit`). Checkpoints are resume points of an unfinished "
        "stage; each holds the Adam state, twice the size of fp32 weights (SmolLM2-135M: 1.6 GB each against "
        "0.54 GB for final/), which is why a finished stage keeps none by default.")

    @model_validator(mode="after")
    def _completion_window_is_dpo_only(self) -> TrainerStage:
        if self.max_completion_length is not None and not KINDS[self.kind].completion_window:
            windowed = [name for name, kind in KINDS.items() if kind.completion_window]
            raise ValueError(f"max_completion_length applies to {' and '.join(windowed)} stages only, not "
                             f"{self.kind}; remove it")
        return self


_Strategy = Literal["sample", "proactive", "ask", "answer"]


class DataStage(StageBase):
    """MR-guided conversation synthesis (the CollabLLM data engine)."""

    kind: Literal["data"] = Field(..., description="`data`.")
    candidates: int = Field(4, ge=2, description="Candidate responses sampled per assistant turn.")
    strategies: list[_Strategy] = Field(
        default_factory=lambda: ["sample", "proactive", "ask", "answer"],
        description="Candidate strategies cycled over the candidates: `sample`, `proactive`, `ask`, `answer`.")
    max_turns: int = Field(4, ge=1, description="Assistant turns per conversation before it stops.")
    prefills: dict[_Strategy, list[str]] = Field(
        default_factory=dict, description="Openings per strategy that replace the built-in ones "
        "(collab.candidates.PREFILLS) on every task kind, e.g. `{ask: [\"Could you tell me\"]}`; a candidate "
        "completes the opening its seed picks, and an empty list means no opening. One opening per action makes the "
        "chosen and rejected replies differ in the action rather than in phrasing.")
    stops: dict[_Strategy, list[str]] = Field(
        default_factory=dict, description="Strings that end a candidate of a strategy, kept in its text, e.g. "
        "`{ask: [\"?\"]}`: a question candidate is the question alone, as if the model had stopped after it, so a "
        "DPO pair teaches asking and then stopping rather than asking and rambling on. Applied to the sampled text "
        "(on every backend alike); a candidate cut this way is complete, not truncated.")
    min_gap: float = Field(
        0.05, ge=0, description="DPO pairs whose MR gap is below this are dropped (CollabLLM: 0.02-0.05).")
    pairs: Literal["best_worst", "across_acts", "all"] = Field(
        "best_worst", description="`best_worst` makes one pair per turn (max MR vs min MR); `across_acts` one pair "
        "per turn of the best reply against the worst reply that takes the other action (asks where the best does "
        "not, or the reverse; best vs worst when every candidate takes the same action), so that every pair teaches "
        "the decision to ask or to answer; `all` makes every pair whose gap is at least `min_gap`.")
    min_chosen_mr: float | None = Field(
        None, description="DPO pairs whose chosen reply scores below this are dropped (empty keeps all). A reply that "
        "wins only because the other was worse (a needless question beating an answer cut off at the token limit) "
        "teaches the wrong behaviour; this keeps the pairs whose chosen reply is good on its own.")
    balance_actions: bool = Field(
        False, description="Equalise the DPO pairs whose chosen reply asks a question and those whose chosen reply "
        "does not, dropping the smallest-gap pairs of the larger group (in each split). A policy that should ask "
        "only when something is missing must see both preferences equally often, or it learns the majority one as "
        "a habit (always ask) instead of the distinction.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of conversations held out as the evaluation split (split by "
        "conversation, never by row).")
    temperature: float = Field(
        0.8, ge=0, description="Sampling temperature of the candidates; overrides `reward.policy_temperature` for "
        "them (the rollouts that score them keep it). Its own default (0.8, above the policy's 0.7) spreads the "
        "candidates of a turn so that MR has something to choose between.")
    max_new_tokens: int = Field(
        256, ge=1, description="Longest candidate, in tokens; overrides `reward.policy_max_new_tokens` for the "
        "candidates (the rollouts that score them keep it). A candidate that hits it is truncated and gets the "
        "truncation penalty.")
    batch_conversations: int = Field(
        64, ge=1, description="Conversations advanced together; their records are saved after every turn.")


class EvalStage(StageBase):
    """Evaluation of models on held-out tasks."""

    kind: Literal["eval"] = Field(..., description="`eval`.")
    models: list[str] = Field(
        default_factory=list, description="Models to compare: names, paths, or names of earlier training stages.")
    runs: int = Field(1, ge=1, description="Conversations per task, with different seeds.")
    mode: Literal["sharded", "full", "concat"] = Field(
        "sharded", description="Lost-in-Conversation mode: `sharded` (facts revealed over turns), `full` (the goal at "
        "once) or `concat` (all shards in one message).")
    tasks: str | None = Field(
        None, description="Task set for this evaluation (name or JSONL path); empty for the recipe's `tasks.name`. A "
        "different set measures transfer to tasks the model was not trained on.")
    split: str | None = Field(None, description="Split of that task set; empty for the recipe's `tasks.eval_split`.")
    limit: int | None = Field(None, ge=1, description="Number of tasks; empty for the recipe's `tasks.limit`.")
    max_turns: int | None = Field(
        None, ge=1, description="Assistant turns per conversation; empty for the recipe's `simulator.max_turns`.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Longest assistant turn, in tokens; overrides `reward.policy_max_new_tokens` for this "
        "evaluation (empty: that value).")
    temperature: float | None = Field(
        None, ge=0, description="Sampling temperature of the assistant; overrides `reward.policy_temperature` for this "
        "evaluation (empty: that value).")
    batch_size: int | None = Field(
        None, ge=1, description="Conversations advanced together and saved together (empty: `policy.max_batch_size`). "
        "Results do not depend on it: every conversation has its own seed.")
    resamples: int = Field(2000, ge=1, description="Bootstrap resamples behind every confidence interval of the report.")
    mr: bool = Field(
        True, description="Also score every conversation with the recipe's reward (`mr`, the conversation-level R*, "
        "computed by the same code as the training MR); false skips it and the judge calls it may cost.")


Stage = Annotated[TrainerStage | DataStage | EvalStage, Field(discriminator="kind")]


class Recipe(Section):
    """A complete run description: model, tasks, simulated user, reward, tracking and the stages to run in order."""

    name: str = Field(
        "run", description="The run's name: `{name}` in `output_dir`, the W&B run name's prefix. Loading a file "
        "without it uses the file's name (without .yaml).")
    seed: int = Field(
        0, description="Seed of everything random in the run: the trainers' `seed` (unless a stage's `trainer` sets "
        "one) and the per-task, per-turn seeds of sampling and simulated users.")
    output_dir: str = Field(
        "runs/{name}", description="The run directory, where every stage writes its outputs; `{name}` is replaced by "
        "`name`. Stages that finished there (DONE) are skipped when the run is started again.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy model.")
    policy: BackendConfig = Field(
        default_factory=BackendConfig, description="How the policy generates outside the trainer (data stages, "
        "rollouts, evaluation): `hf` or `vllm` over `model.name` (dtype from `model.dtype`), or an `openai` "
        "endpoint.")
    tasks: TasksConfig = Field(default_factory=TasksConfig, description="Which tasks the simulated users pursue.")
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig, description="The simulated user.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The interactivity judge.")
    reward: RewardConfig = Field(
        default_factory=RewardConfig, description="The multiturn-aware reward, and the policy's reply length and "
        "temperature that stages may override.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking.")
    serve: ServeConfig | None = Field(
        None, description="A self-hosted simulator and judge started by `collab launch slurm`; empty for none.")
    stages: list[Stage] = Field(
        default_factory=list, description="The stages, run in order: data, training (sft, dpo, online_dpo, grpo, "
        "rloo) and eval.")

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

    @model_validator(mode="after")
    def _one_policy_dtype(self) -> Recipe:
        # model.dtype is what the policy's local engine loads with; a different policy.dtype was silently dropped.
        if self.policy.dtype not in ("auto", self.model.dtype):
            raise ValueError(
                f"policy.dtype is '{self.policy.dtype}' but model.dtype is '{self.model.dtype}'; the policy is loaded "
                f"with model.dtype, so set the dtype there (model.dtype: {self.policy.dtype}) and remove policy.dtype"
            )
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
