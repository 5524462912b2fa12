"""The policy that plays the future assistant turns inside MR during online training: the model being trained, with
the weights of the current step.

Three paths, chosen from the trainer's arguments (`policy_mode`):

| mode            | trainer arguments                      | generation                                                   |
|-----------------|----------------------------------------|--------------------------------------------------------------|
| `hf`            | `use_vllm: false` (CPU, or GPU)        | transformers `generate` on the trainer's live model, unwrapped from accelerate/DeepSpeed (ZeRO-3 parameters gathered), adapter active, eval mode and no grad for the call |
| `vllm-colocate` | `use_vllm: true, vllm_mode: colocate`  | the trainer's own vLLM engine (`trainer.vllm_generation.llm`, online DPO: `trainer.llm`) |
| `vllm-server`   | `use_vllm: true, vllm_mode: server`    | the `trl vllm-serve` server through TRL's client (`trainer.vllm_generation.vllm_client`, online DPO: `trainer.vllm_client`; ranks other than the main one open an HTTP-only client to the same server) |

In the vLLM modes TRL pushes the trainer's weights into the engine or server before it samples the step's
completions, and the reward function runs after that, inside the same step: the rollouts see the same weights as
the completions they score. Every session calls `set_revision(global_step)` on the backend first, so the identity of
its samples changes with every optimizer step (the live backends use no request cache at all: samples of one
launch's step N must never be served to a resumed launch, whose step N may differ).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol

from collab.backends.base import Backend, Request
from collab.chat import Generation
from collab.errors import BackendUnavailable, CollabError
from collab.train.devices import bind_rank_device

PolicyMode = Literal["hf", "vllm-colocate", "vllm-server"]


def policy_mode(args: Any) -> PolicyMode:
    """Which path generates the rollouts' assistant turns, from a TRL config (or a dict of its arguments)."""
    get = args.get if isinstance(args, dict) else lambda key, default=None: getattr(args, key, default)
    if not get("use_vllm", False):
        return "hf"
    mode = get("vllm_mode", "colocate")
    if mode not in ("colocate", "server"):
        raise CollabError(f"vllm_mode must be 'colocate' or 'server', not {mode!r}", where="trainer.vllm_mode")
    return "vllm-server" if mode == "server" else "vllm-colocate"


class LivePolicy(Protocol):
    """A backend over the policy being trained, usable for generation only inside `session(step)`."""

    backend: Backend

    def session(self, step: int) -> contextlib.AbstractContextManager[Backend]: ...


# --- transformers on the live model ------------------------------------------------------------------------------


class HFLivePolicy:
    """The trainer's model itself, through the hf backend (batched, left-padded `generate`)."""

    def __init__(self, trainer: Any, *, name: str, max_batch_size: int = 96) -> None:
        from collab.backends.hf import HFBackend

        self.trainer = trainer
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        # Attention states are reused within one step's rollouts only: set_revision clears them when the weights
        # change, and the session frees them so they never sit in memory through a backward pass.
        self.backend = HFBackend(model, trainer.processing_class, name=name, revision="0",
                                 max_batch_size=max_batch_size, cache=None, prefix_cache_bytes=512 * 2**20)

    @contextlib.contextmanager
    def session(self, step: int) -> Iterator[Backend]:
        from trl.models.utils import unwrap_model_for_generation

        bind_rank_device(getattr(self.trainer.accelerator, "device", None))  # this may be the reward's worker thread
        self.backend.set_revision(step)
        args = self.trainer.args
        with unwrap_model_for_generation(
            self.trainer.model_wrapped, self.trainer.accelerator,
            gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
        ) as model:
            self.backend.model = model  # HFBackend switches it to eval mode and back, under inference_mode
            try:
                yield self.backend
            finally:
                if self.backend.prefix_store is not None:
                    self.backend.prefix_store.clear()


# --- vLLM: the trainer's colocated engine ------------------------------------------------------------------------


def trainer_engine(trainer: Any) -> Any | None:
    """The colocated vLLM engine TRL made: GRPO/RLOO keep it in `vllm_generation.llm`, online DPO in `llm`."""
    generation = getattr(trainer, "vllm_generation", None)
    return getattr(generation, "llm", None) or getattr(trainer, "llm", None)


class VLLMColocatePolicy:
    """The trainer's colocated vLLM engine through the vllm backend; TRL keeps its weights in sync every step."""

    def __init__(self, trainer: Any, *, name: str) -> None:
        from collab.backends.vllm_backend import VLLMBackend

        engine = trainer_engine(trainer)
        if engine is None:
            raise CollabError("the trainer runs vLLM in colocate mode but has no engine (trainer.vllm_generation.llm"
                              " / trainer.llm): this TRL version is not supported for MR rollouts")
        self.backend = VLLMBackend(name=name, llm=engine, revision="0")
        self.device = getattr(getattr(trainer, "accelerator", None), "device", None)

    @contextlib.contextmanager
    def session(self, step: int) -> Iterator[Backend]:
        bind_rank_device(self.device)  # the reward's worker thread starts on GPU 0, the engine lives on this rank's
        self.backend.set_revision(step)
        yield self.backend


# --- vLLM: the trainer's server ----------------------------------------------------------------------------------


def server_url(args: Any) -> str:
    if getattr(args, "vllm_server_base_url", None):
        return str(args.vllm_server_base_url)
    return f"http://{args.vllm_server_host}:{args.vllm_server_port}"


def trainer_client(trainer: Any) -> Any:
    """TRL's client of the vLLM server (main process only), else a client of our own to the same server: the
    reward function runs on every rank, and only generation (HTTP) is needed, not the weight-sync communicator."""
    generation = getattr(trainer, "vllm_generation", None)
    client = getattr(generation, "vllm_client", None) or getattr(trainer, "vllm_client", None)
    if client is not None:
        return client
    from trl.generation.vllm_client import VLLMClient

    args = trainer.args
    return VLLMClient(base_url=server_url(args), connection_timeout=getattr(args, "vllm_server_timeout", 240.0))


class TRLServerBackend(Backend):
    """Chat generation through a `trl vllm-serve` server with TRL's `VLLMClient` (one HTTP request per sample, so
    each carries its own seed; at most `concurrency` in flight)."""

    def __init__(self, client: Any, tokenizer: Any, *, name: str, concurrency: int = 16, revision: str = "0") -> None:
        super().__init__(name, cache=None)
        self.client = client
        self.tokenizer = tokenizer
        self.concurrency = concurrency
        self.revision = revision

    @property
    def identity(self) -> str:
        return f"trl-vllm-server:{self.name}@{self.revision}"

    def set_revision(self, revision: str | int) -> None:
        self.revision = str(revision)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _one(self, request: Request) -> Generation:
        p = request.params
        prefill = request.messages[-1]["role"] == "assistant"
        try:
            out = self.client.chat(
                messages=[list(request.messages)], n=1, temperature=p.temperature, top_p=p.top_p,
                max_tokens=p.max_new_tokens, logprobs=None, max_concurrent_requests=1,
                generation_kwargs={"seed": request.seed, "add_generation_prompt": not prefill,
                                   "continue_final_message": prefill},
            )
        except Exception as e:  # noqa: BLE001 -- a failed request is an explicit failed generation, never empty text
            return Generation.failure(f"vllm server: {type(e).__name__}: {e}")
        ids = list(out["completion_ids"][0])
        prompt_ids = out.get("prompt_ids") or [[]]
        stops = {self.tokenizer.eos_token_id}
        ended = bool(ids) and ids[-1] in stops
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Generation(text=text.rstrip() if prefill else text.strip(), prompt_tokens=len(prompt_ids[0]),
                          completion_tokens=len(ids),
                          finish_reason="length" if not ended and len(ids) >= p.max_new_tokens else "stop")

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(requests)))) as pool:
            return list(pool.map(self._one, requests))


class VLLMServerPolicy:
    def __init__(self, trainer: Any, *, name: str, concurrency: int = 16) -> None:
        self.backend = TRLServerBackend(trainer_client(trainer), trainer.processing_class, name=name,
                                        concurrency=concurrency)

    @contextlib.contextmanager
    def session(self, step: int) -> Iterator[Backend]:
        self.backend.set_revision(step)
        yield self.backend


# --- choosing ----------------------------------------------------------------------------------------------------


def require_vllm(kind: str, *, gpu: bool) -> None:
    """A clear error, before TRL's own, when `use_vllm` is set where vLLM cannot run."""
    import importlib.util

    if not gpu:
        raise BackendUnavailable(
            f"the {kind} stage sets use_vllm, which needs a CUDA GPU, and none is visible on this machine",
            where="trainer.use_vllm",
            fix="run the stage on a GPU machine, or generate with transformers here (`use_vllm: false`).",
        )
    if importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable(
            f"the {kind} stage sets use_vllm, but the vllm package is not installed",
            where="trainer.use_vllm",
            fix="install it with `pip install 'collab[vllm]'` on the GPU machine, or set `use_vllm: false`.",
        )


def make_live_policy(trainer: Any, *, name: str, max_batch_size: int = 96, concurrency: int = 16) -> LivePolicy:
    """The live policy for the trainer's generation mode (see the module docstring)."""
    mode = policy_mode(trainer.args)
    if mode == "hf":
        return HFLivePolicy(trainer, name=name, max_batch_size=max_batch_size)
    if mode == "vllm-colocate":
        return VLLMColocatePolicy(trainer, name=name)
    return VLLMServerPolicy(trainer, name=name, concurrency=concurrency)
