"""What the counts cost: API dollars from each backend's `price_per_million`, GPU-hours from stated throughputs, and
the optimizer steps of trainer stages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from collab.plan.counts import Usage


@dataclass(frozen=True)
class Throughput:
    """Hardware assumptions behind GPU-hours; every field is a `collab plan` option (`--policy-tokens-per-s`).

    The defaults are round figures for an 8B model in bf16 on one A100-80GB-class GPU (the paper's hardware), not
    measurements of this code: compare them with a stage's recorded tokens and time (the data stage's
    `store/*.summary.json`, the trainer's logs) and pass your own.

    Parameters:
        gpus: GPUs of the run. Fixes the effective batch (per_device_train_batch_size x gradient_accumulation_steps
            x gpus) and turns GPU-hours into wall-clock hours (data and eval shards run in parallel).
        policy_tokens_per_s: Generated tokens per second per GPU for the local policy (vLLM, continuous batching).
        prefill_tokens_per_s: Prompt tokens per second per GPU (prefill; prefix caching would make it cheaper).
        train_tokens_per_s: Trained tokens per second per GPU (forward + backward, LoRA, gradient checkpointing).
        reference_forward_cost: Cost of the reference model's forward pass relative to one training pass (DPO, online
            DPO; GRPO when its `beta` > 0).
        api_latency_s: Mean seconds of one API request (simulator, judge, an `openai` policy). With a backend's
            `concurrency` requests in flight per process, it gives the time a stage waits on the API.
        gpu_memory_gb: Memory of one GPU in GiB (80 for A100/H100-80GB, 141 for H200). Sizes every vLLM engine's
            share for the KV-cache check (collab.plan.kvcache), which refuses a recipe whose engine cannot hold one
            sequence of its max_model_len.
    """

    gpus: int = field(default=8, metadata={"help": "GPUs of the run (effective batch, wall-clock hours)"})
    policy_tokens_per_s: float = field(default=2500.0, metadata={"help": "generated tokens/s per GPU"})
    prefill_tokens_per_s: float = field(default=20000.0, metadata={"help": "prompt tokens/s per GPU"})
    train_tokens_per_s: float = field(default=2000.0, metadata={"help": "trained tokens/s per GPU"})
    reference_forward_cost: float = field(default=0.33, metadata={"help": "reference forward / training pass"})
    api_latency_s: float = field(default=3.0, metadata={"help": "mean seconds of one API request"})
    gpu_memory_gb: float = field(default=80.0, metadata={"help": "memory of one GPU in GiB (vLLM KV-cache check)"})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (f.name != "reference_forward_cost" and value == 0):
                raise ValueError(f"{f.name} must be > 0, got {value}")


def api_cost(usage: Usage, price_per_million: tuple[float, float] | None) -> float | None:
    """USD for `usage` at (input, output) USD per million tokens; None when the backend states no price."""
    if price_per_million is None:
        return None
    return (usage.input_tokens * price_per_million[0] + usage.output_tokens * price_per_million[1]) / 1e6


def api_hours(requests: float, concurrency: int, processes: int, throughput: Throughput) -> float:
    """Hours spent waiting on an API: `requests` at `concurrency` in flight in each of `processes` processes."""
    return requests * throughput.api_latency_s / (concurrency * max(processes, 1)) / 3600


def generation_gpu_hours(usage: Usage, throughput: Throughput) -> float:
    """GPU-hours to prefill and generate `usage`'s tokens on local GPUs."""
    seconds = (usage.input_tokens / throughput.prefill_tokens_per_s
               + usage.output_tokens / throughput.policy_tokens_per_s)
    return seconds / 3600


def training_gpu_hours(tokens: float, throughput: Throughput, *, reference: bool) -> float:
    """GPU-hours to train on `tokens` tokens (each seen once per pass), plus the reference forward when used."""
    factor = 1 + (throughput.reference_forward_cost if reference else 0)
    return tokens * factor / throughput.train_tokens_per_s / 3600


@dataclass(frozen=True)
class Steps:
    """Optimizer steps of a trainer stage.

    Parameters:
        rows: What one epoch trains on, in the unit the effective batch counts: SFT rows, DPO pairs, prompts (online
            DPO), or completion passes = prompts x num_generations x num_iterations (GRPO, RLOO).
        unit: The name of that unit.
        effective_batch: Units per optimizer step.
        steps_per_epoch: Optimizer steps per epoch.
        epochs: Epochs (fractional when max_steps ends training early).
        total: Optimizer steps of the stage.
    """

    rows: float
    unit: str
    effective_batch: int
    steps_per_epoch: int
    epochs: float
    total: int


def optimizer_steps(rows: float, unit: str, effective_batch: int, epochs: float, max_steps: int) -> Steps:
    """Steps as the Trainer counts them: ceil(rows / effective batch) per epoch, or `max_steps` when it is > 0."""
    per_epoch = max(1, math.ceil(rows / effective_batch)) if rows > 0 else 0
    if max_steps > 0:
        return Steps(rows, unit, effective_batch, per_epoch, max_steps / per_epoch if per_epoch else 0.0, max_steps)
    return Steps(rows, unit, effective_batch, per_epoch, epochs, math.ceil(per_epoch * epochs))
