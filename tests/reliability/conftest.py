"""Helpers of the reliability tier: the real `collab` command as a subprocess, kill -9 of a whole process tree at
seeded random moments, recipes that talk to the fault-injecting server, and readers of the run directory's outputs.

Every subprocess runs with one OpenMP thread (the machines these tests run on are small and shared) and with W&B off.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.fault_server import MODEL_NAME, FaultConfig, FaultServer

REPO = Path(__file__).resolve().parents[2]


# --- the command -------------------------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `collab` subprocess: this one, minus anything that would make it slower or less
    deterministic, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "COLLAB_ACCELERATE_CONFIG"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
               COLLAB_ACCELERATE_ARGS="--num_cpu_threads_per_process 1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def collab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "collab.cli", *args]


def run_collab(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`collab ARGS` to completion, output captured as text."""
    return subprocess.run(collab_command(*args), cwd=REPO, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(autouse=True, scope="session")
def sigint_as_from_a_terminal() -> Iterator[None]:
    """SIGINT handled, not ignored, in this process while the tests run, so every `collab` they start gets it.

    A shell without job control (a CI runner's `make test &`, nohup) starts a background command with SIGINT ignored,
    and an ignored signal stays ignored across fork and exec: the `collab` processes of the tests would then ignore
    Ctrl-C, as any Unix program started that way should. A handled signal is reset to its default action by exec,
    which is what a terminal's foreground job starts with."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def spawn_collab(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`collab ARGS` in the background, its output appended to `log` (a file, so a full pipe can never stall it),
    with Ctrl-C's signal handled as when a terminal starts it (`sigint_as_from_a_terminal`)."""
    with open(log, "ab") as out:
        return subprocess.Popen(collab_command(*args), cwd=REPO, env=env or cli_env(), stdout=out,
                                stderr=subprocess.STDOUT)


# --- a fork server for crash loops ---------------------------------------------------------------------------------
#
# A fresh `python -m collab.cli` spends seconds importing (openai, datasets, matplotlib) before it does any work, and a
# crash loop of 20 kills pays that 20 times. The fork server imports collab once, then forks one child per command;
# the child calls `collab.cli.main(argv)`, the same function `python -m collab.cli` and the `collab` script call, and
# exits with its return code. The child is an ordinary process doing the real work, killed with a real SIGKILL.
# The server never does any work itself (no threads, no files, no sockets before the fork).

_PRELOAD = ("collab.cli", "collab.data.stage", "collab.data.engine", "collab.factory", "collab.backends.openai_backend",
            "collab.backends.registry", "collab.simulators.registry", "collab.evaluate.runner",
            "collab.evaluate.report", "collab.evaluate.aggregate", "collab.metrics.task_score",
            "collab.metrics.behaviour", "collab.metrics.interactivity", "collab.progress", "collab.run.record",
            "collab.tasks.registry", "datasets", "matplotlib.pyplot")


def fork_server_main() -> None:
    """The fork server's loop: read `{"argv", "log", "env"}` lines on stdin, answer `pid N`, then `exit CODE`."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in _PRELOAD:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: the real command, output to its log
            code = 1
            try:
                fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.environ.update(job["env"])
                from collab.cli import main

                code = main(job["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 -- the child reports anything and exits; never returns to the loop
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


class ForkedRun:
    """A command running in a fork-server child, with the part of Popen's interface the crash loop uses."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.read_exit(timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.read_exit(timeout=timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        return self.returncode


class ForkServer:
    """Runs `fork_server_main` in a subprocess; `run(argv, log)` starts one command in a forked child."""

    def __init__(self) -> None:
        code = "from tests.reliability.conftest import fork_server_main; fork_server_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=cli_env(MPLBACKEND="Agg"),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self._line(timeout=300) == "ready"

    def _line(self, timeout: float | None) -> str | None:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        assert line, f"the fork server died (exit code {self.proc.poll()})"
        return line.strip()

    def run(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> ForkedRun:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log), "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        line = self._line(timeout=60)
        assert line is not None and line.startswith("pid "), line
        return ForkedRun(self, int(line.split()[1]))

    def read_exit(self, timeout: float | None) -> int | None:
        line = self._line(timeout)
        if line is None:
            return None
        assert line.startswith("exit "), line
        return int(line.split()[1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def kill_tree(proc: subprocess.Popen[bytes] | ForkedRun) -> int:
    """SIGKILL `proc` and every process under it, as a machine failure or a cluster's job kill would.

    The tree is frozen first (SIGSTOP, repeated until no new process appears), so nothing forks, reacts to a dying
    parent or finishes a write between the first and the last kill. Trainers run in sessions of their own, so a
    process-group kill would miss them. Returns how many processes were killed."""
    frozen: dict[int, psutil.Process] = {}
    for _ in range(20):
        fresh = [p for p in process_tree(proc.pid) if p.pid not in frozen]
        if not fresh:
            break
        for p in fresh:
            try:
                p.suspend()
                frozen[p.pid] = p
            except psutil.Error:
                pass
    for p in frozen.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait(timeout=30)
    psutil.wait_procs(list(frozen.values()), timeout=30)
    return len(frozen)


def opened(proc: subprocess.Popen[bytes] | ForkedRun, name: str) -> bool:
    """Whether `proc` (or a process under it) has a file called `name` open: a per-process sign that its work has
    begun, unlike a file's existence, which an earlier, killed process may have caused."""
    for p in process_tree(proc.pid):
        try:
            if any(Path(f.path).name == name for f in p.open_files()):
                return True
        except psutil.Error:
            continue
    return False


@dataclass
class CrashLoop:
    """What a crash loop did: kills, runs that finished on their own, and the kill delays drawn."""

    kills: int = 0
    finished_runs: int = 0
    starts: int = 0
    delays: list[float] = field(default_factory=list)
    killed_processes: int = 0


Run = Any  # subprocess.Popen or ForkedRun: poll(), wait(timeout), pid


def crash_loop(
    start: Callable[[int], Run],
    *,
    started: Callable[[Run], bool],
    on_finished: Callable[[], None],
    kills: int,
    window_s: float,
    seed: int,
    start_timeout_s: float = 180,
    run_timeout_s: float = 300,
) -> CrashLoop:
    """Start (`start(i)` for the i-th start), wait until `started(proc)` (its work has begun), then SIGKILL the tree
    after a delay drawn uniformly from [0, window_s) with a seeded RNG; restart (the command resumes) until `kills`
    kills have happened.

    A run that finishes before its kill time must exit 0; `on_finished` then checks its outputs and resets the run
    directory, and the next start begins a fresh run. The loop is bounded by 4 * kills + 10 starts."""
    rng = random.Random(seed)
    report = CrashLoop()
    while report.kills < kills:
        assert report.starts < 4 * kills + 10, f"crash loop did not reach {kills} kills: {report}"
        proc = start(report.starts)
        report.starts += 1
        try:
            deadline = time.monotonic() + start_timeout_s
            while proc.poll() is None and not started(proc):
                assert time.monotonic() < deadline, f"work did not begin within {start_timeout_s} s"
                time.sleep(0.01)
            delay = rng.uniform(0, window_s)
            report.delays.append(delay)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                report.killed_processes += kill_tree(proc)
                report.kills += 1
                continue
            proc.wait(timeout=run_timeout_s)
            assert proc.returncode == 0, f"a run exited with {proc.returncode} without being killed"
            report.finished_runs += 1
            on_finished()
        finally:
            if proc.poll() is None:
                kill_tree(proc)
    return report


# --- recipes -----------------------------------------------------------------------------------------------------


CITIES = ("Lyon", "Porto", "Graz", "Ghent", "Turku", "Split", "Brno", "Aarhus", "Bergen", "Cork", "Malmo", "Basel")


def write_qa_tasks(path: Path, count: int = 8) -> Path:
    """`count` QA tasks (scored by token F1, which needs no helper process): every other one withholds facts the
    simulated user reveals when asked, with 0 to 2 facts so conversations end at different turns."""
    lines = []
    for i in range(count):
        city = CITIES[i % len(CITIES)]
        facts = [f"The club was founded in {1900 + i}.", f"Its colours are {('red', 'blue', 'green')[i % 3]}."]
        facts = facts[: i % 3]
        opening = f"Which city is the home of football club number {i}?"
        lines.append(json.dumps({
            "id": f"qa-{i:02d}", "kind": "qa", "goal": " ".join([opening, *facts]),
            "opening": opening, "facts": facts, "answer": city,
            "needs_clarification": bool(facts)}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def data_recipe(run_dir: Path, base_url: str, tasks: Path, **sections: Any) -> dict[str, Any]:
    """A small data recipe on the QA tasks in `tasks`, whose policy is the fault server's echo endpoint, sampled at
    temperature 0 (deterministic)."""
    recipe: dict[str, Any] = {
        "name": "reliability",
        "seed": 0,
        "output_dir": str(run_dir),
        "model": {"name": "tiny-random-smollm2"},
        "policy": {"kind": "openai", "model": MODEL_NAME, "base_url": base_url, "timeout_s": 5.0, "max_retries": 4},
        "tasks": {"name": str(tasks)},
        "simulator": {"kind": "sharded", "max_turns": 3},
        "reward": {"window": 2, "samples": 2, "policy_temperature": 0.0, "policy_max_new_tokens": 32},
        "stages": [{"kind": "data", "candidates": 2, "max_turns": 3, "temperature": 0.0, "max_new_tokens": 32,
                    "batch_conversations": 2, "eval_fraction": 0.25}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_finished_data_stage(run_dir: Path, rows: int = 12) -> None:
    """A finished data stage as the run-directory contract describes it (sft/ and dpo/ DatasetDicts with train and
    eval splits, stats.json, DONE), built by hand so training tests need no generation."""
    from datasets import Dataset, DatasetDict

    pairs, sft = [], []
    for i in range(rows):
        missing = i % 2 == 0
        question = f"Tom has {i + 2} boxes of apples{'' if missing else ' with 4 in each'}. How many apples?"
        ask, answer = "How many apples are in each box?", f"{(i + 2) * 4} apples."
        chosen, rejected = (ask, answer) if missing else (answer, ask)
        prompt = [{"role": "user", "content": question}]
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}], "conv_id": f"c{i}", "turn": 0,
                      "chosen_mr": 0.9, "rejected_mr": 0.2, "gap": 0.7})
        sft.append({"messages": prompt + pairs[-1]["chosen"], "conv_id": f"c{i}", "turn": 0, "mr": 0.9})
    data = run_dir / "data"
    DatasetDict({"train": Dataset.from_list(pairs[2:]), "eval": Dataset.from_list(pairs[:2])}).save_to_disk(
        str(data / "dpo"))
    DatasetDict({"train": Dataset.from_list(sft[2:]), "eval": Dataset.from_list(sft[:2])}).save_to_disk(
        str(data / "sft"))
    (data / "stats.json").write_text(json.dumps({"conversations": rows, "pairs": {"train": rows - 2}}))
    (data / "DONE").write_text("{}")


# --- outputs -----------------------------------------------------------------------------------------------------


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file parsed; a line that does not parse fails the test (no corrupt rows allowed)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line:
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise AssertionError(f"{path}, line {number} is corrupt: {e}: {line[:200]!r}") from None
    return rows


def keyed(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, dict[str, Any]]:
    """Rows by key; a key seen twice fails the test (no duplicated rows allowed)."""
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        k = key(row)
        assert k not in out, f"duplicated row {k}"
        out[k] = row
    return out


def store_records(run_dir: Path, stage: str = "data") -> dict[tuple[str, int], dict[str, Any]]:
    """The data stage's store records of every shard, by (conversation, turn)."""
    rows = [r for path in sorted((run_dir / stage / "store").glob("shard-*.jsonl")) for r in jsonl_rows(path)]
    return keyed(rows, lambda r: (r["conv_id"], r["turn"]))


def dataset_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """A DatasetDict saved with save_to_disk, as plain rows per split (an empty split is saved without data files,
    which `load_from_disk` cannot read: it is [] here)."""
    from datasets import Dataset

    splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    out = {}
    for split in sorted(splits):
        state = json.loads((path / split / "state.json").read_text(encoding="utf-8"))
        out[split] = Dataset.load_from_disk(str(path / split)).to_list() if state.get("_data_files") else []
    return out


def data_outputs(run_dir: Path, stage: str = "data") -> dict[str, Any]:
    """Everything a data stage produced that must not depend on interruptions (the summary's call counts do)."""
    out = run_dir / stage
    return {"records": store_records(run_dir, stage), "sft": dataset_rows(out / "sft"),
            "dpo": dataset_rows(out / "dpo"), "stats": json.loads((out / "stats.json").read_text()),
            "done": {k: v for k, v in json.loads((out / "DONE").read_text()).items() if k != "finished"}}


def assert_same_records(got: dict[Any, Any], want: dict[Any, Any]) -> None:
    """Same keys and, key by key, the same content; the message names the first differences."""
    missing, extra = sorted(set(want) - set(got), key=str), sorted(set(got) - set(want), key=str)
    assert not missing and not extra, f"lost rows {missing[:5]}, unexpected rows {extra[:5]}"
    changed = [k for k in want if got[k] != want[k]]
    assert not changed, f"{len(changed)} of {len(want)} rows differ from the uninterrupted run, e.g. {changed[:5]}"


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture
def echo_server() -> Iterator[FaultServer]:
    """The fault server without faults: a deterministic OpenAI-compatible echo endpoint on loopback."""
    with FaultServer(FaultConfig()) as server:
        yield server


@pytest.fixture
def faulty_server() -> Iterator[FaultServer]:
    """30% transient faults (429 with Retry-After, 500, hangs, truncated and non-JSON bodies, empty choices)."""
    with FaultServer(FaultConfig.mixed(0.3, seed=11, retry_after="0.05", hang_s=30)) as server:
        yield server
