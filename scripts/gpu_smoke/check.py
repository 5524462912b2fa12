"""Helpers of scripts/gpu_smoke/run.sh (the GPU smoke test of collab; not a pytest module). Subcommands:

  env                      versions, GPU, DeepSpeed accelerator
  hf DEVICE DTYPE          check a: collab's HF backend generates a batch on DEVICE in DTYPE
  data RUN_DIR             write a finished data stage (sft/ and dpo/ DatasetDicts, stats.json, DONE) as the
                           integration tests do (tests/integration/test_train_stages.py)
  verify RUN_DIR STAGE CONFIG STEPS [--wandb] [--lora] [--mr]
                           the stage finished: DONE, final/, launch.json names CONFIG (ddp|zero2|zero3|cpu), world
                           size 1, the last checkpoint at STEPS with finite losses; --wandb: an offline W&B run was
                           written; --lora: final/ is a LoRA adapter (no full weights); --mr: every logged step has
                           the MR breakdown (mr/mean)
  preempt RUN_DIR STAGE CONFIG STEPS -- TRAIN_ARGS...
                           check j: `collab train TRAIN_ARGS` gets SIGUSR1 once checkpoint-2 is complete, must exit
                           with 75 (the job script's requeue code) having saved a checkpoint, then `collab resume
                           RUN_DIR` must finish the stage from it; then verify as above
  table RESULT...          the PASS/FAIL table of run.sh's results (ID:NAME=VERDICT[:SECONDS] each)
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


def env() -> None:
    import importlib.metadata as md

    import torch

    for name in ["torch", "transformers", "trl", "accelerate", "deepspeed", "datasets", "peft", "huggingface_hub",
                 "tokenizers", "safetensors", "pydantic", "pydantic_core", "openai", "wandb", "math-verify",
                 "pyarrow", "fsspec", "numpy", "pandas", "regex", "typing_extensions", "filelock", "rich", "click",
                 "protobuf", "triton", "sympy"]:
        try:
            print(f"{name:20s} {md.version(name):15s} {md.distribution(name).locate_file('')}")
        except md.PackageNotFoundError:
            print(f"{name:20s} MISSING")
    print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count(),
          "torch.version.cuda", torch.version.cuda)
    if torch.cuda.is_available():
        print("device 0", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
    for module in ["collab", "trl", "transformers", "datasets", "deepspeed", "wandb", "openai", "math_verify"]:
        t = time.time()
        try:
            mod = __import__(module)
            print(f"import {module:12s} ok  {time.time() - t:5.1f}s  {getattr(mod, '__file__', '')}")
        except Exception as e:  # noqa: BLE001 - report every failure, go on
            print(f"import {module:12s} FAILED {type(e).__name__}: {e}")
    try:
        from deepspeed.accelerator import get_accelerator

        print("deepspeed accelerator", get_accelerator()._name)
    except Exception as e:  # noqa: BLE001
        print("deepspeed accelerator FAILED", type(e).__name__, e)


def hf(device: str, dtype: str) -> None:
    import torch

    from collab.backends.hf import HFBackend
    from collab.chat import SamplingParams

    t = time.time()
    backend = HFBackend.from_name("tiny-random-smollm2", dtype=dtype, device=device)
    param = next(backend.model.parameters())
    print("loaded", backend.identity, param.device, param.dtype, f"{time.time() - t:.1f}s")
    assert param.device.type == device, param.device
    assert param.dtype == getattr(torch, dtype), param.dtype
    prompts = [[{"role": "user", "content": f"Tom has {i + 2} boxes of apples. How many apples?"}] for i in range(16)]
    prompts.append([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Let me ask:"}])
    t = time.time()
    sampled = backend.generate(prompts, SamplingParams(max_new_tokens=32, temperature=0.7, n=2, seed=1))
    print(f"sampled {sum(len(g) for g in sampled)} replies in {time.time() - t:.2f}s")
    assert len(sampled) == len(prompts) and all(len(g) == 2 for g in sampled)
    flat = [g for group in sampled for g in group]
    assert all(g.finish_reason in ("stop", "length") for g in flat), {g.finish_reason for g in flat}
    assert all(0 < g.completion_tokens <= 32 and g.prompt_tokens > 0 for g in flat)
    print("first reply:", repr(flat[0].text[:120]), flat[0].finish_reason, flat[0].completion_tokens)
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0)
    first = backend.generate(prompts[:4], greedy)
    again = backend.generate(prompts[:4], greedy)
    assert [g[0].text for g in first] == [g[0].text for g in again], "greedy decoding is not repeatable"
    if device == "cuda":
        print(f"max memory allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print("HF backend OK")


def data(run_dir: str) -> None:
    from datasets import Dataset, DatasetDict

    root = Path(run_dir) / "data"
    rows = []
    for i in range(12):
        boxes, missing = i + 2, i % 2 == 0
        question = f"Tom has {boxes} boxes of apples{'' if missing else ' with 4 apples in each'}. How many apples?"
        ask, answer = "How many apples are in each box?", f"{boxes * 4} apples."
        chosen, rejected = (ask, answer) if missing else (answer, ask)
        rows.append({"prompt": [{"role": "user", "content": question}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "conv_id": f"c{i}", "turn": 0, "chosen_mr": 0.9, "rejected_mr": 0.2, "gap": 0.7})
    sft = [{"messages": r["prompt"] + r["chosen"], "conv_id": r["conv_id"], "turn": 0, "mr": r["chosen_mr"]}
           for r in rows]
    DatasetDict({"train": Dataset.from_list(rows[2:]), "eval": Dataset.from_list(rows[:2])}).save_to_disk(
        str(root / "dpo"))
    DatasetDict({"train": Dataset.from_list(sft[2:]), "eval": Dataset.from_list(sft[:2])}).save_to_disk(
        str(root / "sft"))
    (root / "stats.json").write_text(json.dumps({"conversations": 12, "mr_mean": 0.55, "pairs": {"train": 10}}))
    (root / "DONE").write_text("{}")
    print("data stage written to", root)


def verify(run_dir: str, stage: str, config: str, steps: int, wandb: bool = False, lora: bool = False,
           mr: bool = False) -> None:
    root = Path(run_dir) / stage
    done = json.loads((root / "DONE").read_text())
    print("DONE", done)
    launch = json.loads((root / "launch.json").read_text())
    print("launch.json", launch)
    assert Path(launch["accelerate_config"]).stem == config, f"launched with {launch['accelerate_config']}"
    assert launch["world_size"] == 1, launch["world_size"]
    assert done.get("global_step") == steps, done
    state = json.loads((root / "checkpoints" / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    print("losses", losses)
    assert losses and all(math.isfinite(x) for x in losses), losses
    final = root / "final"
    files = sorted(p.name for p in final.iterdir())
    print("final/", files)
    assert any(f.endswith(".safetensors") for f in files) and "tokenizer_config.json" in files, files
    scored = [{k: v for k, v in e.items() if k.startswith("mr/")} for e in state["log_history"] if "mr/mean" in e]
    if scored:
        print("MR per scored step", scored)
    if mr:
        logged = [e for e in state["log_history"] if "loss" in e]
        assert len(scored) == len(logged) == steps, f"{len(scored)} of {len(logged)} logged steps have mr/mean"
        assert all(math.isfinite(e["mr/mean"]) for e in scored), scored
    if lora:
        assert "adapter_config.json" in files and "adapter_model.safetensors" in files, files
        assert "model.safetensors" not in files, f"final/ holds full weights, not an adapter: {files}"
    if wandb:
        runs = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
        print("wandb runs", [r.name for r in runs])
        assert runs and any(p.suffix == ".wandb" and p.stat().st_size > 0 for r in runs for p in r.iterdir()), runs
    print(f"stage {stage} OK")


def preempt(run_dir: str, stage: str, config: str, steps: int, train_args: list[str]) -> None:
    """Check j: Slurm's warning signal to `collab train`, exit code 75, then `collab resume` from the checkpoint."""
    import signal
    import subprocess

    from collab.run.checkpoints import is_complete_checkpoint
    from collab.train.preemption import EXIT_PREEMPTED

    root = Path(run_dir) / stage
    first = root / "checkpoints" / "checkpoint-2"
    command = [sys.executable, "-m", "collab.cli", "train", *train_args]
    log = Path(f"{run_dir}.first-launch.log")  # a file, not a pipe: nobody reads a pipe while the trainer runs
    print("starting", " ".join(command), ">", log, flush=True)
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 150
            while not is_complete_checkpoint(first):
                if proc.poll() is not None:
                    raise AssertionError(f"collab train ended (exit code {proc.returncode}) before {first} was "
                                         f"complete:\n{log.read_text()[-3000:]}")
                assert time.monotonic() < deadline, f"no complete {first} within 150 s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGUSR1)
            print(f"SIGUSR1 sent once {first.name} was complete", flush=True)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    print(log.read_text()[-3000:])
    assert proc.returncode == EXIT_PREEMPTED, f"exit code {proc.returncode}, not {EXIT_PREEMPTED} (requeue)"
    stopped = json.loads((root / "preempted.json").read_text())
    print("preempted.json", stopped)
    assert stopped["signal"] == "SIGUSR1" and 2 <= stopped["global_step"] < steps, stopped
    assert is_complete_checkpoint(root / "checkpoints" / f"checkpoint-{stopped['global_step']}"), stopped
    assert not (root / "DONE").exists(), "the stage finished although it was preempted"

    command = [sys.executable, "-m", "collab.cli", "resume", run_dir]
    print("starting", " ".join(command), flush=True)
    resumed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                             check=False)  # the exit code is asserted below, after the output is printed
    print(resumed.stdout[-3000:])
    assert resumed.returncode == 0, f"collab resume exited with {resumed.returncode}"
    last_launch = (root / "train.log").read_text().split("\n=== ")[-1]
    checkpoint = root / "checkpoints" / f"checkpoint-{stopped['global_step']}"
    assert f"resuming stage '{stage}' from {checkpoint}" in last_launch, "the second launch did not resume"
    assert not (root / "preempted.json").exists()
    verify(run_dir, stage, config, steps)
    print(f"stage {stage}: preempted at step {stopped['global_step']}, resumed to {steps}: OK")


# What a PASS of each check proves (docs/cluster.md, "Checking a GPU node", has the same table).
PROVES = {
    "a": "the HF backend samples on the GPU, greedy decoding repeats",
    "b": "accelerate launch trains and saves in bf16; dpo starts from sft",
    "c": "DeepSpeed ZeRO-3 trains and saves the gathered weights",
    "d": "GRPO with MR as the reward runs on the GPU",
    "e": "generation and rollouts with ZeRO-3 sharded parameters",
    "f": "the W&B tracking path writes an offline run",
    "g": "a LoRA adapter trains and saves; dpo continues sft's adapter",
    "h": "online DPO with MR ranking each pair runs on the GPU",
    "i": "LoRA under DeepSpeed ZeRO-2 in bf16 (the paper recipes' setup)",
    "j": "SIGUSR1 -> checkpoint, exit 75 (requeue); collab resume finishes",
}


def table(results: list[str]) -> None:
    """Print one row per check: its result, seconds and what a PASS proves; the last line says whether all passed."""
    rows = []
    for item in results:
        head, _, tail = item.partition("=")
        check_id, _, name = head.partition(":")
        verdict, _, seconds = tail.partition(":")
        rows.append((check_id, name, verdict, seconds or "-", PROVES.get(check_id, "")))
    widths = [max(len(r[i]) for r in [("check", "name", "result", "s", ""), *rows]) for i in range(4)]
    line = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    print(line.format("check", "name", "result", "s", "a PASS proves"))  # s: seconds the check took
    for row in rows:
        print(line.format(*row))
    failed = [r[0] for r in rows if r[2] not in ("PASS", "NOT-RUN")]
    print(f"ALL PASSED ({sum(r[2] == 'PASS' for r in rows)} checks)" if not failed else
          f"FAILED: {' '.join(failed)} (see their logs)")


def main(argv: list[str]) -> None:
    cmd, *rest = argv
    if cmd == "env":
        env()
    elif cmd == "hf":
        hf(rest[0], rest[1])
    elif cmd == "data":
        data(rest[0])
    elif cmd == "verify":
        flags = rest[4:]
        verify(rest[0], rest[1], rest[2], int(rest[3]), "--wandb" in flags, "--lora" in flags, "--mr" in flags)
    elif cmd == "preempt":
        split = rest.index("--")
        preempt(rest[0], rest[1], rest[2], int(rest[3]), rest[split + 1:])
    elif cmd == "table":
        table(rest)
    else:
        raise SystemExit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
