"""Launching a trainer stage's ranks from the driver: the `accelerate launch` command, its number of processes,
and running it (with signals forwarded) while the driver waits.

The command comes from `collab.launch.accelerate_command` (which honours COLLAB_ACCELERATE_CONFIG and
COLLAB_ACCELERATE_ARGS, the cluster's per-node flags), run with this interpreter:

    python -m accelerate.commands.launch --config_file accelerate_configs/<name>.yaml [--num_processes N] \
        [$COLLAB_ACCELERATE_ARGS] -m collab.train.rank_main --run-dir RUN --stage NAME

Number of processes (the world size, recorded in `<run>/<stage>/launch.json` and checked on resume): the
`--num_processes` of COLLAB_ACCELERATE_ARGS, else the config file's `num_processes`, else the number of visible
GPUs (collab then passes it). On a machine without a GPU a stage whose config is not a CPU one runs with cpu.yaml.

Signals: the trainer runs in its own session, with SIGUSR1 ignored by the launchers in between (an ignored signal
stays ignored across exec; the trainer installs its own handler). While it runs, SIGUSR1 and SIGTERM sent to
`collab` are forwarded as SIGUSR1 to every process under the launcher (torchrun puts its workers in sessions of
their own, so a process-group signal would miss them), and repeated every few seconds until the launch ends (a
trainer still starting up has not installed its handler yet); SIGINT is forwarded as SIGINT.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from collab.config import TrainerStage
from collab.errors import CollabError
from collab.launch import (
    ACCELERATE_ARGS_ENV,
    ACCELERATE_CONFIG_ENV,
    accelerate_command,
    accelerate_config_path,
)
from collab.run.layout import StagePaths

CPU_CONFIG = "cpu"
FORWARDED = {signal.SIGUSR1: signal.SIGUSR1, signal.SIGTERM: signal.SIGUSR1, signal.SIGINT: signal.SIGINT}
TAIL_LINES = 40
RESEND_S = 5.0


def config_file(name: str) -> Path:
    """accelerate_configs/<name>.yaml (or `name` itself when it is a path); a CollabError listing the shipped
    configs when it does not exist."""
    path = accelerate_config_path(name)
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise CollabError(
            f"accelerate config '{name}' does not exist ({path})",
            fix=f"use one of {shipped or ['cpu', 'ddp', 'zero2', 'zero3', 'fsdp2']} or a path to a config file.",
        )
    return path


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CollabError(f"cannot read the accelerate config {path}: {e}") from None
    if not isinstance(data, dict):
        raise CollabError(f"{path} is not an accelerate config (a mapping of keys)")
    return data


def is_cpu_config(config: dict[str, Any]) -> bool:
    return config.get("use_cpu") is True


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in an argument list."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass
class LaunchPlan:
    """Everything about one launch of a trainer stage, decided before it starts."""

    command: list[str]
    config: Path
    world_size: int
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What launch.json keeps."""
        return {"world_size": self.world_size, "accelerate_config": str(self.config),
                "command": shlex.join(self.command)}


def plan_launch(
    stage: TrainerStage,
    run_dir: Path,
    *,
    environ: dict[str, str] | None = None,
    gpus: int | None = None,
    python: str = sys.executable,
) -> LaunchPlan:
    """The launch command and world size of `stage` on this machine (see the module docstring)."""
    env = dict(os.environ if environ is None else environ)
    if gpus is None:
        from collab.train.devices import visible_gpus

        gpus = visible_gpus()
    notes = []
    name = env.get(ACCELERATE_CONFIG_ENV) or stage.accelerate_config
    path = config_file(name)
    config = read_config(path)
    if gpus == 0 and not is_cpu_config(config) and not env.get(ACCELERATE_CONFIG_ENV):
        notes.append(f"no GPU on this machine: launching stage '{stage.label}' with {CPU_CONFIG}.yaml instead of "
                     f"{path.name}")
        path = config_file(CPU_CONFIG)
        config = read_config(path)
    extra = shlex.split(env.get(ACCELERATE_ARGS_ENV, ""))
    given = flag_value(extra, "--num_processes")
    if given is not None:
        world_size = int(given)
    elif isinstance(config.get("num_processes"), int) and config["num_processes"] > 0:
        world_size = config["num_processes"]
    else:
        world_size = max(gpus, 1)
        extra = ["--num_processes", str(world_size), *extra]
    launch_env = {ACCELERATE_CONFIG_ENV: str(path), ACCELERATE_ARGS_ENV: shlex.join(extra)}
    command = accelerate_command(stage.accelerate_config, run_dir, stage.label, environ={**env, **launch_env})
    if command[:2] == ["accelerate", "launch"]:
        # This interpreter's accelerate, whether or not its bin/ is on PATH; --quiet drops the launcher's own
        # traceback when the trainer exits non-zero (the trainer has printed the real error already).
        command = [python, "-m", "accelerate.commands.launch", "--quiet", *command[2:]]
    return LaunchPlan(command=command, config=path, world_size=world_size, notes=notes)


# --- running -----------------------------------------------------------------------------------------------------


@dataclass
class LaunchResult:
    returncode: int
    tail: str
    signals: list[str]


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


class _Forwarder:
    """Forward preemption signals received by this process to the launched tree, while it runs.

    A preemption signal is sent again every RESEND_S seconds until the launch ends: one that arrives while the
    trainer is still starting (before it installed its handler, with the signal still ignored) is not lost.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}
        self._repeater: threading.Thread | None = None

    def _send(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _repeat(self) -> None:
        while self.proc is not None and self.proc.poll() is None:
            time.sleep(RESEND_S)
            self._send(signal.SIGUSR1)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signal.Signals(signum).name)
        target = FORWARDED[signal.Signals(signum)]
        self._send(target)
        if target == signal.SIGUSR1 and self._repeater is None:
            self._repeater = threading.Thread(target=self._repeat, name="collab-signal-resend", daemon=True)
            self._repeater.start()

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            self._previous = {s: signal.getsignal(s) for s in FORWARDED}
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # inherited, ignored, by the launchers
        try:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        finally:
            if on_main:
                for signum in FORWARDED:
                    signal.signal(signum, self._handle)
        return self.proc

    def stop(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}


def run_launch(plan: LaunchPlan, paths: StagePaths, out: IO[str] | None = None) -> LaunchResult:
    """Run the launch, streaming its output to `out` (stdout) and appending it to `<stage>/train.log`."""
    out = sys.stdout if out is None else out
    paths.root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    partial = ""
    forwarder = _Forwarder()
    with open(paths.log, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(plan.command)}\n".encode())
        proc = forwarder.start(plan.command, env)
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                text = chunk.decode("utf-8", errors="replace")
                if "SIGINT" not in forwarder.received:  # after Ctrl-C the launchers' tracebacks go to the log only
                    out.write(text)
                    out.flush()
                lines = (partial + text).replace("\r", "\n").split("\n")
                partial = lines.pop()
                tail.extend(line for line in lines if line.strip())
            returncode = proc.wait()
        except BaseException:
            for pid in [proc.pid, *_descendants(proc.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            raise
        finally:
            forwarder.stop()
            if proc.stdout is not None:
                proc.stdout.close()
    if partial.strip():
        tail.append(partial)
    return LaunchResult(returncode=returncode, tail="\n".join(tail), signals=forwarder.received)
