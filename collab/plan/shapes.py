"""The shape of a model that sizes its vLLM KV cache and weights: layers, KV heads, head size, parameters.

Read without loading anything and without a model hub (the planner runs on login nodes and laptops): from the
model's config.json when the name is a local folder, else from a small table of the models the shipped recipes
name. An unknown model has no shape (`ShapeLookup.shape` is None, with the reason): the memory check then says it
was skipped rather than passing in silence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bytes per value of a `dtype` as vLLM loads it. "auto" is 2: vLLM runs a float32 or float16 checkpoint in float16
# and a bfloat16 one in bfloat16, and the KV cache (kv_cache_dtype "auto") follows the weights.
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelShape:
    """What the KV cache and the weights of a dense decoder cost.

    Parameters:
        layers: Decoder layers (`num_hidden_layers`).
        kv_heads: Key/value heads per layer (`num_key_value_heads`; grouped-query attention makes it small).
        head_dim: Size of one head (`head_dim`, else hidden_size / num_attention_heads).
        params: Parameters, embeddings and output head included.
        max_position_embeddings: The model's own context; vLLM's max_model_len when none is given. None: unknown.
        source: Where the numbers come from, for messages.
    """

    layers: int
    kv_heads: int
    head_dim: int
    params: float
    max_position_embeddings: int | None
    source: str

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel_size: int = 1) -> float:
        """KV-cache bytes of one token on one GPU: a key and a value per layer and KV head. Tensor parallelism
        splits the heads; with more GPUs than KV heads vLLM replicates them, so a GPU keeps at least one."""
        heads = max(1, math.ceil(self.kv_heads / tensor_parallel_size))
        return 2 * self.layers * heads * self.head_dim * dtype_bytes

    def weight_bytes(self, dtype_bytes: int, tensor_parallel_size: int = 1) -> float:
        """Weight bytes on one GPU (tensor parallelism shards them evenly)."""
        return self.params * dtype_bytes / tensor_parallel_size


@dataclass(frozen=True)
class ShapeLookup:
    """A model's shape, or None with the reason it is unknown."""

    shape: ModelShape | None
    reason: str = ""


_TABLE_SOURCE = "collab's table of known shapes"

# The models the shipped recipes name, from their published config.json (layers, KV heads, head size, context);
# parameters counted from the same configs (embeddings, untied output head for Llama and Qwen3-8B).
KNOWN_SHAPES: dict[str, ModelShape] = {
    "llama-3.1-8b-instruct": ModelShape(32, 8, 128, 8.03e9, 131072, _TABLE_SOURCE),
    "qwen3-8b": ModelShape(36, 8, 128, 8.19e9, 40960, _TABLE_SOURCE),
    "smollm2-135m-instruct": ModelShape(30, 3, 64, 1.345e8, 8192, _TABLE_SOURCE),
}
# Base models share their instruct variant's shape.
KNOWN_SHAPES["llama-3.1-8b"] = KNOWN_SHAPES["llama-3.1-8b-instruct"]
KNOWN_SHAPES["smollm2-135m"] = KNOWN_SHAPES["smollm2-135m-instruct"]


def model_shape(name: str) -> ShapeLookup:
    """The shape of `name`: a local model folder's config.json (a LoRA adapter folder: its base model's), else the
    table by the name's last part (`meta-llama/Llama-3.1-8B-Instruct` -> `llama-3.1-8b-instruct`)."""
    from collab.models import canonical_name

    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return _from_folder(path)
    if (path / "adapter_config.json").is_file():
        base = _read_json(path / "adapter_config.json").get("base_model_name_or_path")
        if isinstance(base, str) and base and Path(base).expanduser() != path:
            return model_shape(base)
        return ShapeLookup(None, f"the adapter {path} names no base model")
    key = canonical_name(name).rstrip("/").rsplit("/", 1)[-1].lower()
    if key in KNOWN_SHAPES:
        return ShapeLookup(KNOWN_SHAPES[key])
    return ShapeLookup(None, f"'{name}' is neither a local model folder with a config.json nor in collab's table of "
                             f"known shapes ({', '.join(sorted(KNOWN_SHAPES))})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _from_folder(folder: Path) -> ShapeLookup:
    raw = _read_json(folder / "config.json")
    config = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw  # multimodal: the LM part
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return ShapeLookup(None, f"{folder / 'config.json'} lacks num_hidden_layers, num_attention_heads or "
                                 "hidden_size")
    params = _stored_params(folder, raw) or _counted_params(config, head_dim, kv_heads)
    if params is None:
        return ShapeLookup(None, f"cannot tell the parameters of {folder}: no safetensors and no hidden_size, "
                                 "intermediate_size and vocab_size in its config.json")
    context = config.get("max_position_embeddings")
    return ShapeLookup(ModelShape(layers, kv_heads, head_dim, params, int(context) if context else None,
                                  f"{folder / 'config.json'}"))


def _stored_params(folder: Path, config: dict[str, Any]) -> float | None:
    """Parameters from the safetensors on disk (their bytes over the stored dtype's size)."""
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    size = DTYPE_BYTES.get(dtype, 2) if dtype != "auto" else 2
    index = _read_json(folder / "model.safetensors.index.json").get("metadata", {})
    total = index.get("total_size") if isinstance(index, dict) else None
    if not total:
        total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return float(total) / size if total else None


def _counted_params(config: dict[str, Any], head_dim: int, kv_heads: int) -> float | None:
    """Parameters of a Llama-like decoder (attention, gated MLP, embeddings) from its config."""
    try:
        hidden, inter = int(config["hidden_size"]), int(config["intermediate_size"])
        vocab, layers = int(config["vocab_size"]), int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return float(layers * per_layer + embeddings + hidden)
