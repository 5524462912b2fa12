"""The offline vLLM engine, for GPU machines.

vLLM is an optional extra (`pip install collab[vllm]`) and needs a CUDA GPU. Choosing this backend elsewhere fails
with a clear error at construction, not deep inside a run. The backend can also wrap an engine someone else owns,
such as the colocated engine of a TRL trainer, whose weights the trainer keeps in sync.
"""

from __future__ import annotations

from typing import Any

from collab.backends.base import Backend, Request
from collab.backends.cache import RequestCache
from collab.chat import Generation
from collab.errors import BackendUnavailable


def _require_vllm() -> Any:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is always installed with collab
        has_gpu = False
    if not has_gpu:
        raise BackendUnavailable(
            "the vllm backend needs a CUDA GPU and none is visible on this machine",
            where="backend kind 'vllm'",
            fix="use kind 'hf' on CPU machines (or 'openai' with a vLLM server running elsewhere).",
        )
    try:
        import vllm
    except ImportError:
        raise BackendUnavailable(
            "the vllm backend needs the vllm package, which is not installed",
            where="backend kind 'vllm'",
            fix="install it with `pip install 'collab[vllm]'` on the GPU machine.",
        ) from None
    return vllm


class VLLMBackend(Backend):
    def __init__(
        self,
        *,
        name: str,
        llm: Any | None = None,
        model_path: str | None = None,
        revision: str = "0",
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        cache: RequestCache | None = None,
    ) -> None:
        super().__init__(name, cache)
        self._vllm = _require_vllm()
        if llm is None:
            llm = self._vllm.LLM(
                model=model_path or name,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
            )
        self.llm = llm
        self.revision = revision

    @property
    def identity(self) -> str:
        return f"vllm:{self.name}@{self.revision}"

    def set_revision(self, revision: str | int) -> None:
        self.revision = str(revision)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.get_tokenizer()(text, add_special_tokens=False)["input_ids"])

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        sampling = [
            self._vllm.SamplingParams(
                max_tokens=r.params.max_new_tokens,
                temperature=r.params.temperature,
                top_p=r.params.top_p,
                # Per request, so a sample does not depend on its batch: vLLM 0.33 keeps a torch.Generator per seeded
                # request (v1 runner; seeded requests bypass FlashInfer's batch sampler) or hashes the noise from the
                # seed, position and token (v2 runner). Numerics may still differ by batch unless batch-invariant.
                seed=r.seed,
            )
            for r in requests
        ]
        # A final assistant message is a prefill to continue; vLLM takes that flag per call, so split the batch.
        outputs: list[Any] = [None] * len(requests)
        for prefill in (False, True):
            idx = [i for i, r in enumerate(requests) if (r.messages[-1]["role"] == "assistant") == prefill]
            if idx:
                got = self.llm.chat([list(requests[i].messages) for i in idx], [sampling[i] for i in idx],
                                    use_tqdm=False, add_generation_prompt=not prefill, continue_final_message=prefill)
                for i, out in zip(idx, got):
                    outputs[i] = out
        results = []
        for out in outputs:
            choice = out.outputs[0]
            results.append(
                Generation(
                    text=choice.text.strip(),
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(choice.token_ids),
                    finish_reason="length" if choice.finish_reason == "length" else "stop",
                )
            )
        return results
