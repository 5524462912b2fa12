"""The offline vLLM engine, for GPU machines.

vLLM is an optional extra (`pip install collab[vllm]`) and needs a CUDA GPU. Choosing this backend elsewhere fails
with a clear error at construction, not deep inside a run. The backend can also wrap an engine someone else owns,
such as the colocated engine of a TRL trainer, whose weights the trainer keeps in sync.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from collab.backends.base import Backend, Request
from collab.backends.cache import RequestCache
from collab.backends.length_guard import fit_conversation
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
        max_model_len: int | None = None,
        cache: RequestCache | None = None,
    ) -> None:
        super().__init__(name, cache)
        self._vllm = _require_vllm()
        if llm is None:
            if max_model_len is None:
                raise BackendUnavailable(
                    "a vllm engine needs max_model_len (else it reserves KV-cache for the model's whole context)",
                    where="backend kind 'vllm'", fix="set `max_model_len` in the recipe's backend section.",
                )
            llm = self._vllm.LLM(
                model=model_path or name,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len,  # an EngineArgs field, passed through LLM's **kwargs
            )
        # A wrapped engine (a trainer's colocated one) knows its own limit.
        self.max_model_len: int | None = max_model_len or getattr(getattr(llm, "model_config", None),
                                                                  "max_model_len", None)
        self.llm = llm
        self.revision = revision

    @property
    def identity(self) -> str:
        return f"vllm:{self.name}@{self.revision}"

    def set_revision(self, revision: str | int) -> None:
        self.revision = str(revision)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.get_tokenizer()(text, add_special_tokens=False)["input_ids"])

    def _fit(self, requests: list[Request]) -> tuple[list[Request], dict[int, Generation]]:
        """Requests cut to fit max_model_len, and the failures for those that cannot fit (by index)."""
        if self.max_model_len is None:
            return list(requests), {}
        tokenizer = self.llm.get_tokenizer()
        fitted: list[Request] = []
        skipped: dict[int, Generation] = {}
        for i, r in enumerate(requests):
            budget = self.max_model_len - r.params.max_new_tokens
            fit = fit_conversation(tokenizer, r.messages, budget) if budget > 0 else None
            if fit is None or fit.messages is None:
                tokens = fit.prompt_tokens if fit is not None else "any"
                skipped[i] = Generation.failure(
                    f"PromptTooLong: {tokens} prompt tokens (system prompt + last message) do not fit "
                    f"max_model_len={self.max_model_len} - max_new_tokens={r.params.max_new_tokens}"
                )
                fitted.append(r)
                continue
            if fit.dropped:
                with self._stats_lock:
                    self.stats.prompts_truncated += 1
                r = replace(r, messages=fit.messages)
                self._dropped[i] = fit.dropped
            fitted.append(r)
        return fitted, skipped

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        self._dropped: dict[int, int] = {}  # request index -> messages cut to fit, reported in Generation.extra
        requests, skipped = self._fit(requests)
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
            idx = [i for i, r in enumerate(requests)
                   if i not in skipped and (r.messages[-1]["role"] == "assistant") == prefill]
            if idx:
                got = self.llm.chat([list(requests[i].messages) for i in idx], [sampling[i] for i in idx],
                                    use_tqdm=False, add_generation_prompt=not prefill, continue_final_message=prefill)
                for i, out in zip(idx, got):
                    outputs[i] = out
        results = []
        for i, out in enumerate(outputs):
            if i in skipped:
                results.append(skipped[i])
                continue
            choice = out.outputs[0]
            results.append(
                Generation(
                    text=choice.text.strip(),
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(choice.token_ids),
                    finish_reason="length" if choice.finish_reason == "length" else "stop",
                    extra={"messages_dropped": self._dropped[i]} if i in self._dropped else {},
                )
            )
        return results
