"""Will every vLLM engine of a recipe start? The KV cache of one full sequence must fit its GPU share.

vLLM refuses to start when its share of the GPU (gpu_memory_utilization x GPU memory), less the weights, cannot hold
the KV cache of one sequence of max_model_len tokens; on a cluster that shows up after the queue wait and a model
load. The same arithmetic here, before anything is submitted:

    free          = GPU memory x gpu_memory_utilization - weights / tensor_parallel_size
    KV per token  = 2 (key, value) x layers x KV heads / tensor_parallel_size x head_dim x dtype bytes
    refused when    KV per token x max_model_len > free

It is a necessary condition, not a sufficient one: vLLM also keeps activations and CUDA graphs in its share (a few
GiB), and wants room for more than one sequence to be fast. The engines checked:

- `policy` with `kind: vllm` (data and eval stages): `policy.max_model_len`, `policy.gpu_memory_utilization`,
  `policy.tensor_parallel_size`;
- the colocated engine of an online trainer stage (`use_vllm: true`, `vllm_mode: colocate`): TRL's
  `vllm_max_model_length` (empty: the model's own context, as TRL leaves it to vLLM) or, for online DPO, which has
  no such key, `max_length + max_new_tokens` as TRL sizes it; `vllm_gpu_memory_utilization`. The trainer keeps the
  rest of the GPU for its weights, gradients, optimizer state and activations;
- `serve:` (`vllm serve` for the simulator and judge): `serve.max_model_len`, `serve.gpu_memory_utilization`,
  `serve.tensor_parallel_size` (empty: all GPUs of its nodes).

A second check: the longest reply an engine is asked for plus the longest prompt expected (the plan's token
assumptions at the turn limit) must fit max_model_len. The policy backend cuts a longer conversation's oldest turns
(collab/backends/length_guard.py), so for it only a reply that leaves no room for even the opening prompt is
refused; TRL's and `vllm serve`'s requests have no such guard, so for them the expected longest request is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from collab.config import DataStage, EvalStage, Recipe, StageBase, TrainerStage
from collab.plan.counts import TokenAssumptions, transcript_tokens
from collab.plan.shapes import DTYPE_BYTES, ModelShape, model_shape
from collab.preflight import Problem
from collab.stages.kinds import KINDS

GIB = 2**30
DEFAULT_GPU_MEMORY_GB = 80.0  # collab.plan.cost.Throughput.gpu_memory_gb
DEFAULT_GPUS_PER_NODE = 8  # serve.tensor_parallel_size empty, outside `collab launch slurm --gpus-per-node`
VLLM_DEFAULT_SHARE = 0.9  # vLLM's own gpu_memory_utilization, for a trainer argument set to null


@dataclass(frozen=True)
class Engine:
    """One vLLM engine a recipe builds, with the recipe keys that size it.

    Parameters:
        name: Whose engine it is, for messages ("policy", "stage 'grpo' (colocated)", "serve").
        model: The model it loads.
        max_model_len: Tokens per sequence; None: the model's own context (vLLM's default).
        length_key: The recipe key that sets max_model_len.
        gpu_memory_utilization: Its share of each GPU.
        share_key: The recipe key that sets that share.
        tensor_parallel_size: GPUs it shards the model over.
        tp_fix: How to give it more GPUs, in words.
        dtype: The recipe's dtype for its weights.
        completion_tokens: The longest reply it is asked for.
        completion_key: The recipe key that sets that reply length.
        prompt_tokens: The longest prompt expected (the plan's token assumptions at the turn limit).
        prompt_guarded: A longer prompt loses its oldest turns instead of failing (collab's policy backend).
        colocated: It shares each GPU with a trainer process.
    """

    name: str
    model: str
    max_model_len: int | None
    length_key: str
    gpu_memory_utilization: float
    share_key: str
    tensor_parallel_size: int
    tp_fix: str
    dtype: str
    completion_tokens: int
    completion_key: str
    prompt_tokens: int
    prompt_guarded: bool = False
    colocated: bool = False


@dataclass(frozen=True)
class EngineFit:
    """An engine's numbers on a GPU of `gpu_bytes`; `skipped` says why nothing could be checked (unknown shape)."""

    engine: Engine
    gpu_bytes: float
    shape: ModelShape | None
    skipped: str = ""

    @property
    def max_model_len(self) -> int | None:
        return self.engine.max_model_len or (self.shape.max_position_embeddings if self.shape else None)

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.engine.dtype]

    @property
    def share_bytes(self) -> float:
        return self.gpu_bytes * self.engine.gpu_memory_utilization

    @property
    def weight_bytes(self) -> float:
        assert self.shape is not None
        return self.shape.weight_bytes(self.dtype_bytes, self.engine.tensor_parallel_size)

    @property
    def free_bytes(self) -> float:
        return self.share_bytes - self.weight_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        assert self.shape is not None
        return self.shape.kv_bytes_per_token(self.dtype_bytes, self.engine.tensor_parallel_size)

    @property
    def kv_bytes(self) -> float:
        """KV cache of one sequence of max_model_len tokens."""
        assert self.max_model_len is not None
        return self.kv_bytes_per_token * self.max_model_len

    @property
    def fits(self) -> bool:
        return bool(self.skipped) or self.kv_bytes <= self.free_bytes

    def summary(self) -> str:
        """One line: the engine and its numbers, or why it was not checked."""
        e = self.engine
        if self.skipped:
            return f"{e.name}: KV-cache check skipped: {self.skipped}"
        text = (f"{e.name}: {e.model}, max_model_len {self.max_model_len}: KV cache of one sequence "
                f"{gib(self.kv_bytes)} GiB, free in its share {gib(self.free_bytes)} GiB ({_share_text(self)})")
        if e.colocated:
            text += f"; the trainer keeps the other {gib(self.gpu_bytes - self.share_bytes)} GiB of each GPU"
        return text

    def problems(self) -> list[Problem]:
        if self.skipped:
            return []
        return [p for p in (self._memory_problem(), self._length_problem()) if p is not None]

    def _memory_problem(self) -> Problem | None:
        if self.fits:
            return None
        e, length = self.engine, self.max_model_len
        assert length is not None
        per_token = self.kv_bytes_per_token
        message = (f"the vLLM engine of {e.name} ({e.model}; shape from {self.shape.source if self.shape else '?'}) "
                   f"cannot hold the KV cache of one sequence of max_model_len {length} tokens: it needs "
                   f"{gib(self.kv_bytes)} GiB ({per_token / 1024:g} KiB per token x {length} tokens), but its "
                   + (f"share leaves {gib(self.free_bytes)} GiB ({_share_text(self)})" if self.free_bytes > 0 else
                      f"share does not even hold the weights ({_share_text(self)})"))
        if e.max_model_len is None:
            message += f"; {e.length_key} is empty, so vLLM takes the model's whole context"
        if e.colocated:
            message += (f"; the trainer on the same GPU keeps the other {1 - e.gpu_memory_utilization:.0%} for its "
                        "weights, gradients and optimizer state")
        fixes = []
        if self.free_bytes > per_token:
            fixes.append(f"lower {e.length_key} to at most {int(self.free_bytes // per_token)} tokens")
        needed = (self.weight_bytes + self.kv_bytes) / self.gpu_bytes
        if needed <= 1:
            fixes.append(f"raise {e.share_key} to {math.ceil(needed * 100) / 100:g} or more"
                         + (" (taking it from the trainer)" if e.colocated else ""))
        fixes.append(e.tp_fix)
        fixes.append(f"if your GPUs have more than {self.gpu_bytes / GIB:g} GiB, say so with --gpu-memory-gb")
        return Problem(e.length_key, message, "; or ".join(fixes) + ".")

    def _length_problem(self) -> Problem | None:
        e, length = self.engine, self.max_model_len
        assert length is not None
        room = length - e.completion_tokens
        if room >= e.prompt_tokens or (e.prompt_guarded and room > 0):
            return None
        wanted = e.prompt_tokens + e.completion_tokens
        if room <= 0:
            message = (f"{e.completion_key} {e.completion_tokens} is not below max_model_len {length} of the vLLM "
                       f"engine of {e.name}: "
                       "a reply that long leaves no room for a prompt")
        else:
            message = (f"max_model_len {length} of the vLLM engine of {e.name} leaves {room} tokens for the prompt next to a reply of "
                       f"{e.completion_tokens} ({e.completion_key}), but its longest prompt is expected at about "
                       f"{e.prompt_tokens} tokens (the plan's token assumptions at the turn limit), and a longer "
                       "request fails")
        return Problem(e.length_key, message, f"raise {e.length_key} to at least {wanted}, or lower "
                       f"{e.completion_key} (and check --user-turn-tokens / --assistant-turn-tokens of `collab plan` "
                       "against your tasks).")


def gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def _share_text(fit: EngineFit) -> str:
    e = fit.engine
    tp = f", sharded over {e.tensor_parallel_size} GPUs" if e.tensor_parallel_size > 1 else ""
    return (f"{e.gpu_memory_utilization:g} x {fit.gpu_bytes / GIB:g} GiB = {gib(fit.share_bytes)} GiB, less "
            f"{gib(fit.weight_bytes)} GiB of {e.dtype} weights{tp}")


# --- the engines of a recipe --------------------------------------------------------------------------------------


def longest_prompt(tokens: TokenAssumptions, turns: int, cap: int) -> int:
    """Tokens of a policy prompt at the last of `turns` assistant turns: the system prompt, `turns` user turns and
    the `turns - 1` replies before it (each capped at `cap`)."""
    return math.ceil(tokens.system_prompt_tokens + transcript_tokens(tokens, turns, turns - 1, cap))


def _policy_engine(recipe: Recipe, stages: Sequence[StageBase], tokens: TokenAssumptions) -> Engine | None:
    users = [s for s in stages if isinstance(s, (DataStage, EvalStage))]  # online stages roll out with the trainer
    policy = recipe.policy
    if policy.kind != "vllm" or not users:
        return None
    # The longest reply: MR rollouts' policy turns, every data stage's candidates, every eval stage's turns.
    replies = [(recipe.reward.policy_max_new_tokens, "reward.policy_max_new_tokens")]
    turns = [recipe.simulator.max_turns]
    for s in users:
        if s.max_new_tokens is not None:  # a data stage's always is; an eval stage's may follow the reward's
            replies.append((s.max_new_tokens, f"stages.{s.label}.max_new_tokens"))
        if isinstance(s, EvalStage) and s.max_turns is not None:
            turns.append(s.max_turns)
    completion, key = max(replies)
    assert policy.max_model_len is not None  # the schema requires it for kind vllm
    return Engine(name="policy", model=policy.model or recipe.model.name,
                  max_model_len=policy.max_model_len, length_key="policy.max_model_len",
                  gpu_memory_utilization=policy.gpu_memory_utilization, share_key="policy.gpu_memory_utilization",
                  tensor_parallel_size=policy.tensor_parallel_size,
                  tp_fix="shard it over more GPUs (policy.tensor_parallel_size)", dtype=recipe.model.dtype,
                  completion_tokens=completion, completion_key=key,
                  prompt_tokens=longest_prompt(tokens, max(turns), completion), prompt_guarded=True)


def _trainer_engine(recipe: Recipe, stage: TrainerStage, tokens: TokenAssumptions) -> Engine | None:
    from collab.config import trainer_args_with_defaults

    kind = KINDS[stage.kind]
    if kind.online is None or not stage.trainer.get("use_vllm"):
        return None
    args = trainer_args_with_defaults(stage.kind, stage.trainer)
    if args.get("vllm_mode", "colocate") != "colocate":
        return None  # server mode: a node of its own (`trl vllm-serve` with its own settings)
    key = f"stages.{stage.label}.trainer"
    assert kind.reply_length is not None  # every online kind names its reply-length key
    completion = int(args.get(kind.reply_length) or 0)  # empty (GRPO allows it): no cap but max_model_len
    if "vllm_max_model_length" in args:
        length = args["vllm_max_model_length"]
        length, length_key = (int(length) if length else None), f"{key}.vllm_max_model_length"
    else:  # TRL's OnlineDPOTrainer sizes its engine itself: max_length (prompt + completion) + max_new_tokens
        length, length_key = int(args["max_length"]) + completion, f"{key}.max_length"
    source = recipe.stage(stage.data_from) if stage.data_from else None
    # Prompts are every state the data stage reached (up to its turn limit), or only the tasks' openings.
    turns = min(source.max_turns, recipe.simulator.max_turns) if isinstance(source, DataStage) else 1
    cap = source.max_new_tokens if isinstance(source, DataStage) else completion
    return Engine(name=f"stage '{stage.label}' (colocated)", model=recipe.model.name,
                  max_model_len=length, length_key=length_key,
                  gpu_memory_utilization=float(args.get("vllm_gpu_memory_utilization") or VLLM_DEFAULT_SHARE),
                  share_key=f"{key}.vllm_gpu_memory_utilization",
                  tensor_parallel_size=int(args.get("vllm_tensor_parallel_size") or 1),
                  tp_fix=(f"generate on a vLLM node of its own ({key}.vllm_mode: server; collab refuses colocated "
                          "tensor parallelism)"), dtype=recipe.model.dtype,
                  completion_tokens=completion, completion_key=f"{key}.{kind.reply_length}",
                  prompt_tokens=longest_prompt(tokens, turns, cap), colocated=True)


def _serve_engine(recipe: Recipe, stages: Sequence[StageBase], tokens: TokenAssumptions,
                  gpus_per_node: int) -> Engine | None:
    serve = recipe.serve
    if serve is None or not any(KINDS[s.kind].generates for s in stages):  # type: ignore[attr-defined]
        return None
    turns, cap = recipe.simulator.max_turns, recipe.reward.policy_max_new_tokens
    requests = []  # (prompt, reply, reply key) of each role the server plays
    if "simulator" in serve.roles:
        requests.append((tokens.simulator_prompt_tokens + transcript_tokens(tokens, turns, turns, cap),
                         recipe.simulator.max_new_tokens, "simulator.max_new_tokens"))
    if "judge" in serve.roles:
        requests.append((tokens.judge_prompt_tokens + transcript_tokens(tokens, turns, turns, cap),
                         math.ceil(tokens.judge_output_tokens), "the judge's reply (--judge-output-tokens)"))
    prompt, completion, key = max(requests, key=lambda r: r[0] + r[1])
    tp = serve.tensor_parallel_size or gpus_per_node * serve.nodes
    return Engine(name="serve", model=serve.model, max_model_len=serve.max_model_len,
                  length_key="serve.max_model_len", gpu_memory_utilization=serve.gpu_memory_utilization,
                  share_key="serve.gpu_memory_utilization", tensor_parallel_size=tp,
                  tp_fix="shard it over more GPUs (serve.tensor_parallel_size, serve.nodes)", dtype="auto",
                  completion_tokens=completion, completion_key=key, prompt_tokens=math.ceil(prompt))


def recipe_engines(recipe: Recipe, labels: Sequence[str] | None = None, *, tokens: TokenAssumptions | None = None,
                   gpus_per_node: int | None = None) -> list[Engine]:
    """The vLLM engines that the stages `labels` (default all) of `recipe` build, in the order they first run."""
    tokens = tokens or TokenAssumptions()
    stages = [s for s in recipe.stages if labels is None or s.label in labels]
    found = [_policy_engine(recipe, stages, tokens)]
    found += [_trainer_engine(recipe, s, tokens) for s in stages if isinstance(s, TrainerStage)]
    found.append(_serve_engine(recipe, stages, tokens, gpus_per_node or DEFAULT_GPUS_PER_NODE))
    return [e for e in found if e is not None]


def fit(engine: Engine, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB) -> EngineFit:
    """`engine`'s numbers on one GPU of `gpu_memory_gb` GiB."""
    lookup = model_shape(engine.model)
    gpu_bytes = gpu_memory_gb * GIB
    if lookup.shape is None:
        return EngineFit(engine, gpu_bytes, None, skipped=f"the model's shape is unknown: {lookup.reason}")
    if engine.max_model_len is None and lookup.shape.max_position_embeddings is None:
        return EngineFit(engine, gpu_bytes, lookup.shape,
                         skipped=f"{engine.length_key} is empty and the model's own context is unknown")
    return EngineFit(engine, gpu_bytes, lookup.shape)


def check_engines(recipe: Recipe, labels: Sequence[str] | None = None, *,
                  gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB, tokens: TokenAssumptions | None = None,
                  gpus_per_node: int | None = None) -> list[EngineFit]:
    """Every vLLM engine of the stages `labels` (default all), fitted on a GPU of `gpu_memory_gb` GiB."""
    return [fit(e, gpu_memory_gb) for e in recipe_engines(recipe, labels, tokens=tokens, gpus_per_node=gpus_per_node)]


def engine_problems(fits: Sequence[EngineFit]) -> list[Problem]:
    return [p for f in fits for p in f.problems()]


def skipped_notes(fits: Sequence[EngineFit]) -> list[str]:
    """What was not checked, one line per engine: an unchecked engine is said so, never passed in silence."""
    return [f.summary() for f in fits if f.skipped]
