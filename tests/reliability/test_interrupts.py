"""Ctrl-C during a stage: one line saying what was saved and the resume command, exit code 130, no traceback.

Each test starts a real `collab` process, waits until the stage has saved something, and sends it SIGINT, as the
terminal does on Ctrl-C (the trainer runs in a session of its own, so the terminal's signal reaches `collab`, which
forwards it).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from collab.run.checkpoints import last_complete_checkpoint
from tests.fault_server import FaultServer
from tests.reliability.conftest import (
    data_recipe,
    spawn_collab,
    write_finished_data_stage,
    write_qa_tasks,
    write_yaml,
)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"collab ended (exit {proc.returncode}) before the test could interrupt it:\n" \
                                    + log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def interrupt(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=180)  # a bound against a hang; saving a checkpoint on a loaded machine is slow
    return code, log.read_text(errors="replace")


def test_ctrl_c_during_training_names_the_last_checkpoint_and_the_resume_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_finished_data_stage(run_dir, rows=40)
    recipe = write_yaml(tmp_path / "train.yaml", {
        "name": "interrupt", "output_dir": str(run_dir), "model": {"name": "tiny-random-smollm2"},
        "stages": [{"kind": "data"}, {"kind": "sft", "data_from": "data", "trainer": {
            "max_steps": 10_000, "save_steps": 2, "per_device_train_batch_size": 2, "max_length": 64,
            "gradient_checkpointing": False, "logging_steps": 1}}]})
    log = tmp_path / "out.log"
    proc = spawn_collab("train", str(recipe), log=log)
    checkpoints = run_dir / "sft" / "checkpoints"

    wait_for(lambda: last_complete_checkpoint(checkpoints) is not None, proc, log, timeout=400)
    code, output = interrupt(proc, log)

    saved = last_complete_checkpoint(checkpoints)
    assert code == 130, output[-3000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last == (f"collab: interrupted during stage 'sft': the last complete checkpoint is {saved} (step "
                    f"{saved.name.split('-')[1]}); the steps after it were lost. Continue with `collab resume "
                    f"{run_dir}`.")
    assert "KeyboardInterrupt" in (run_dir / "sft" / "train.log").read_text()  # the details stay in the log


def test_ctrl_c_during_the_data_stage_counts_the_saved_turns(tmp_path: Path, echo_server: FaultServer) -> None:
    run_dir = tmp_path / "run"
    # Enough tasks that the stage is still running when the signal lands, even on a loaded machine (64 took 20 s).
    tasks = write_qa_tasks(tmp_path / "tasks.jsonl", count=512)
    recipe = write_yaml(tmp_path / "data.yaml", data_recipe(run_dir, echo_server.base_url, tasks))
    log = tmp_path / "out.log"
    proc = spawn_collab("train", str(recipe), log=log)
    store = run_dir / "data" / "store"

    wait_for(lambda: any(p.stat().st_size > 0 for p in store.glob("*.jsonl")), proc, log, timeout=200)
    code, output = interrupt(proc, log)

    assert code == 130, output[-3000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    records = sum(1 for p in store.glob("*.jsonl") for line in p.read_text().splitlines() if line.strip())
    assert last == (f"collab: interrupted during stage 'data': {records} scored turns are saved in {store}; the turns "
                    f"in progress were lost. Continue with `collab resume {run_dir}`.")
