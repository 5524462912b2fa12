"""The embedded SmolLM2: converted once from the wheel's GGUF into the cache, safely under concurrency, then usable
by name everywhere a model is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collab.backends.hf import HFBackend
from collab.chat import SamplingParams

pytestmark = pytest.mark.integration

CONVERT = "from collab.models import embedded_model_dir; print(embedded_model_dir())"


def test_two_processes_converting_into_a_fresh_cache_produce_one_complete_model(tmp_path: Path) -> None:
    env = {**os.environ, "COLLAB_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert paths == {str(tmp_path / "models" / "smollm2-135m-instruct")}
    model_dir = Path(paths.pop())
    assert (model_dir / "model.safetensors").stat().st_size > 100_000_000  # 135M float32 weights
    assert (model_dir / "tokenizer_config.json").is_file()
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_the_embedded_model_answers_a_chat_by_name(smollm2_backend: HFBackend) -> None:
    [[reply]] = smollm2_backend.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                                          SamplingParams(max_new_tokens=16, temperature=0.0))
    assert "Paris" in reply.text
    assert reply.prompt_tokens > 10 and 0 < reply.completion_tokens <= 16
