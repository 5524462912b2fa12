"""The vLLM KV-cache check: every engine a recipe builds must hold one max_model_len sequence in its GPU share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collab.cli import main
from collab.config import load_recipe, recipes_root, validate_recipe
from collab.plan.kvcache import GIB, check_engines, engine_problems, skipped_notes
from collab.plan.shapes import KNOWN_SHAPES, model_shape
from collab.preflight import MemoryCheck, check, preflight

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
PAPER = [recipes_root() / m / f"{t}.yaml" for m in ("llama-3.1-8b-instruct", "qwen3-8b")
         for t in ("math-hard", "bigcodebench", "medium")]
MATH = recipes_root() / "llama-3.1-8b-instruct" / "math-hard.yaml"
# The published config.json of Llama-3.1-8B-Instruct (the fields a shape reads).
LLAMA_CONFIG = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096,
                "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False,
                "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}


def recipe(**sections: Any) -> Any:
    raw = {"name": "kv", "model": {"name": LLAMA, "dtype": "bfloat16"},
           "policy": {"kind": "vllm", "max_model_len": 16384, "gpu_memory_utilization": 0.85},
           "tasks": {"name": "clarify-math", "limit": 2}, "stages": [{"kind": "data", "max_new_tokens": 1024}],
           **sections}
    return validate_recipe(raw)


@pytest.mark.parametrize("path", PAPER, ids=[f"{p.parent.name}/{p.stem}" for p in PAPER])
def test_the_paper_recipes_fit_an_80_gib_gpu(path: Path) -> None:
    fits = check_engines(load_recipe(path))

    assert [f.engine.name for f in fits] == ["policy", "stage 'online_dpo' (colocated)", "stage 'grpo' (colocated)"]
    assert engine_problems(fits) == [] and skipped_notes(fits) == []
    assert all(f.kv_bytes < f.free_bytes for f in fits)


def test_hand_computed_numbers_for_llama_3_1_8b() -> None:
    [policy] = check_engines(recipe())

    # KV per token: 2 (key, value) x 32 layers x 8 KV heads x 128 x 2 bytes (bf16) = 128 KiB
    assert policy.kv_bytes_per_token == 131072
    assert policy.kv_bytes == 16384 * 131072 == 2 * GIB
    # weights 8.03e9 x 2 bytes; share 0.85 x 80 GiB = 68 GiB
    assert policy.weight_bytes == pytest.approx(16.06e9)
    assert policy.free_bytes == pytest.approx(0.85 * 80 * GIB - 16.06e9)  # 53.04 GiB
    assert policy.fits
    # Tensor parallelism halves both the weights and the KV heads of one GPU.
    [sharded] = check_engines(recipe(policy={"kind": "vllm", "max_model_len": 16384, "tensor_parallel_size": 2}))
    assert (sharded.kv_bytes_per_token, sharded.weight_bytes) == (65536, pytest.approx(8.03e9))


def test_the_table_matches_the_parameters_counted_from_the_published_configs(tmp_path: Path) -> None:
    qwen3 = {**LLAMA_CONFIG, "num_hidden_layers": 36, "intermediate_size": 12288, "vocab_size": 151936,
             "head_dim": 128, "max_position_embeddings": 40960}
    smollm2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576,
               "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
               "max_position_embeddings": 8192}
    for key, config in (("llama-3.1-8b-instruct", LLAMA_CONFIG), ("qwen3-8b", qwen3), ("smollm2-135m-instruct", smollm2)):
        folder = tmp_path / key
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        counted = model_shape(str(folder)).shape
        known = KNOWN_SHAPES[key]
        assert counted is not None and counted.params == pytest.approx(known.params, rel=2e-3), key
        assert (counted.layers, counted.kv_heads, counted.head_dim, counted.max_position_embeddings) == (
            known.layers, known.kv_heads, known.head_dim, known.max_position_embeddings), key


def test_a_long_context_on_a_small_share_is_refused_with_the_numbers() -> None:
    r = load_recipe(MATH, ["policy.max_model_len=131072", "policy.gpu_memory_utilization=0.3"])

    [problem] = preflight(r, environment=False, files_only=True)

    assert problem.where == "policy.max_model_len"
    assert ("cannot hold the KV cache of one sequence of max_model_len 131072 tokens: it needs 16.0 GiB (128 KiB per "
            "token x 131072 tokens), but its share leaves 9.0 GiB (0.3 x 80 GiB = 24.0 GiB, less 15.0 GiB of bfloat16 "
            "weights)") in problem.message
    assert "lower policy.max_model_len to at most 74079 tokens" in problem.fix
    assert "raise policy.gpu_memory_utilization to 0.39 or more" in problem.fix
    assert "policy.tensor_parallel_size" in problem.fix and "--gpu-memory-gb" in problem.fix
    # The same recipe fits a 141 GiB GPU (H200).
    assert MemoryCheck(gpu_memory_gb=141).problems(r) == []


def test_collab_plan_refuses_it_and_shows_the_engines_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", str(MATH), "--set", "policy.max_model_len=131072", "--set",
                 "policy.gpu_memory_utilization=0.3"])
    err = capsys.readouterr().err
    assert code == 2 and "1. policy.max_model_len: the vLLM engine of policy" in err and "needs 16.0 GiB" in err

    assert main(["plan", str(MATH), "--gpu-memory-gb", "141"]) == 0
    out = capsys.readouterr().out
    assert "vLLM engines on a 141 GiB GPU" in out and "gpu-memory-gb=141" in out
    assert main(["plan", str(MATH), "--gpu-memory-gb", "0"]) == 2


def test_a_colocated_engine_without_a_length_takes_the_models_context_and_is_refused() -> None:
    r = load_recipe(MATH, ["stages.grpo.trainer.vllm_max_model_length=null"])

    [problem] = engine_problems(check_engines(r))

    assert problem.where == "stages.grpo.trainer.vllm_max_model_length"
    assert "max_model_len 131072 tokens" in problem.message and "is empty, so vLLM takes the model's whole context" in (
        problem.message)
    assert "the trainer on the same GPU keeps the other 70%" in problem.message
    assert "vllm_mode: server" in problem.fix


def test_online_dpo_sizes_its_engine_as_max_length_plus_max_new_tokens() -> None:
    fits = {f.engine.name: f for f in check_engines(load_recipe(MATH))}
    online = fits["stage 'online_dpo' (colocated)"]

    assert online.max_model_len == 4096 + 1024 and online.engine.length_key == "stages.online_dpo.trainer.max_length"
    assert online.engine.gpu_memory_utilization == 0.3


def test_a_reply_that_leaves_no_room_for_the_prompt_is_refused() -> None:
    policy = {"kind": "vllm", "max_model_len": 1024}
    [problem] = engine_problems(check_engines(recipe(policy=policy)))
    assert problem.where == "policy.max_model_len"
    assert "stages.data.max_new_tokens 1024 is not below max_model_len 1024" in problem.message

    # The policy backend drops a long conversation's oldest turns, so a tight window is only refused for TRL's engine.
    assert engine_problems(check_engines(recipe(policy={"kind": "vllm", "max_model_len": 2048}))) == []
    grpo = {"kind": "grpo", "data_from": "data", "trainer": {"use_vllm": True, "vllm_max_model_length": 2048,
                                                             "max_completion_length": 1024}}
    r = recipe(stages=[{"kind": "data", "max_turns": 7, "max_new_tokens": 1024}, grpo])
    [problem] = engine_problems(check_engines(r, ["grpo"]))
    assert problem.where == "stages.grpo.trainer.vllm_max_model_length"
    assert "leaves 1024 tokens for the prompt" in problem.message and "about 2560 tokens" in problem.message
    assert "raise stages.grpo.trainer.vllm_max_model_length to at least 3584" in problem.fix


def test_a_local_model_folder_is_read_from_its_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16_060_522_496}}))

    [policy] = check_engines(recipe(model={"name": str(tmp_path), "dtype": "bfloat16"}))

    assert policy.shape is not None and policy.shape.source == str(tmp_path / "config.json")
    assert policy.shape.params == 8_030_261_248 and policy.kv_bytes_per_token == 131072


def test_an_unknown_model_is_skipped_and_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = recipe(model={"name": "acme/unknown-7b"})

    notes = check(r, "r.yaml", environment=False)

    assert len(notes) == 1 and notes[0].startswith("policy: KV-cache check skipped: the model's shape is unknown")
    assert "'acme/unknown-7b' is neither a local model folder" in notes[0]
    path = tmp_path / "r.yaml"
    path.write_text(f"name: kv\noutput_dir: {tmp_path / 'run'}\nmodel: {{name: acme/unknown-7b}}\n"
                    "policy: {kind: vllm, max_model_len: 4096}\ntasks: {name: clarify-math, limit: 2}\n"
                    "stages: [{kind: eval}]\n")
    assert main(["recipes", "validate", str(path), "--no-preflight"]) == 0
    assert "note: policy: KV-cache check skipped" in capsys.readouterr().out


def test_serve_shards_over_the_gpus_of_its_nodes_unless_told() -> None:
    serve = {"model": LLAMA, "max_model_len": 16384, "roles": ["simulator"]}
    sim = {"kind": "llm", "backend": {"kind": "openai", "model": "x", "base_url_env": "X"}}
    r = recipe(policy={"kind": "hf"}, simulator=sim, serve=serve)

    [engine] = check_engines(r, gpus_per_node=4)
    assert engine.engine.name == "serve" and engine.engine.tensor_parallel_size == 4
    assert engine.weight_bytes == pytest.approx(8.03e9 * 2 / 4)
    assert check_engines(r)[0].engine.tensor_parallel_size == 8  # outside `collab launch slurm`: 8 per node


def test_validate_checks_the_shipped_recipes_on_the_gpu_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "validate", "--gpu-memory-gb", "40"]) == 2
    out = capsys.readouterr().out
    # 0.3 x 40 GiB cannot hold an 8B model's weights for the colocated engines; the policy's 0.85 share can.
    assert "FAIL" in out and "share does not even hold the weights (0.3 x 40 GiB = 12.0 GiB" in out
    assert "ok   " in out and "quickstart.yaml" in out
