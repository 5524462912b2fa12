"""Build a backend from its recipe section (collab.factory builds every backend of a recipe through this)."""

from __future__ import annotations

import os

from collab.backends.base import Backend
from collab.backends.cache import RequestCache
from collab.config import BackendConfig
from collab.errors import CollabError


def make_backend(
    config: BackendConfig, *, default_model: str, cache: RequestCache | None = None, where: str = "backend"
) -> Backend:
    """The backend a recipe section describes; `default_model` fills an empty `model` (the policy's name)."""
    model = config.model or default_model
    if config.kind == "hf":
        from collab.backends.hf import HFBackend

        return HFBackend.from_name(model, dtype=config.dtype, max_batch_size=config.max_batch_size, cache=cache,
                                   prefix_cache_bytes=config.prefix_cache_mb * 2**20)
    if config.kind == "vllm":
        from collab.backends.vllm_backend import VLLMBackend
        from collab.models import merged_weights, resolve_model

        return VLLMBackend(
            name=model,
            # vLLM loads full weights only: a LoRA stage's adapter is merged once into `<stage>/final-merged`.
            model_path=merged_weights(resolve_model(model, where=f"{where}.model")),
            dtype=config.dtype,
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_len,
            cache=cache,
        )
    from collab.backends.openai_backend import OpenAIBackend

    base_url = config.base_url
    if config.base_url_env:
        base_url = os.environ.get(config.base_url_env) or base_url
        if not base_url:
            raise CollabError(
                f"environment variable {config.base_url_env} is not set",
                where=f"{where}.base_url_env",
                fix=f"export {config.base_url_env}=http://HOST:PORT/v1 or set {where}.base_url.",
            )
    return OpenAIBackend(
        model=model,
        base_url=base_url,
        api_key_env=config.api_key_env,
        concurrency=config.concurrency,
        requests_per_minute=config.requests_per_minute,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        max_wall_s=config.max_wall_s,
        price_per_million=config.price_per_million,
        cache=cache,
    )

