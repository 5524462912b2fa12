"""The `accelerate launch` command of a trainer stage, its world size, the shipped configs, and running it."""

from __future__ import annotations

import io
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from collab.config import TrainerStage
from collab.errors import CollabError
from collab.launch import project_root
from collab.run.layout import StagePaths
from collab.train.driver_launch import LaunchPlan, plan_launch, run_launch

CONFIGS = project_root() / "accelerate_configs"
ENTRY = ["-m", "collab.train.rank_main", "--run-dir", "runs/x", "--stage", "dpo"]
LAUNCHER = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]


def stage(config: str = "cpu") -> TrainerStage:
    return TrainerStage(kind="dpo", data_from="data", accelerate_config=config)


def test_cpu_config_launches_one_process_with_this_interpreter() -> None:
    plan = plan_launch(stage("cpu"), Path("runs/x"), environ={}, gpus=0)
    assert plan.command == [*LAUNCHER, "--config_file", str(CONFIGS / "cpu.yaml"), *ENTRY]
    assert plan.world_size == 1 and plan.notes == []


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp2"])
def test_gpu_configs_get_one_process_per_visible_gpu(name: str) -> None:
    plan = plan_launch(stage(name), Path("runs/x"), environ={}, gpus=4)
    assert plan.command == [*LAUNCHER, "--config_file", str(CONFIGS / f"{name}.yaml"), "--num_processes", "4", *ENTRY]
    assert plan.world_size == 4


def test_gpu_config_on_a_machine_without_gpu_falls_back_to_cpu() -> None:
    plan = plan_launch(stage("zero3"), Path("runs/x"), environ={}, gpus=0)
    assert plan.config == CONFIGS / "cpu.yaml" and plan.world_size == 1
    assert plan.notes == ["no GPU on this machine: launching stage 'dpo' with cpu.yaml instead of zero3.yaml"]


def test_cluster_flags_from_the_environment_set_the_world_size() -> None:
    env = {"COLLAB_ACCELERATE_ARGS": "--num_machines 2 --num_processes 16 --machine_rank 1 --rdzv_backend c10d"}
    plan = plan_launch(stage("zero2"), Path("runs/x"), environ=env, gpus=8)
    assert plan.world_size == 16
    assert plan.command[plan.command.index("-m", 3) - 8:plan.command.index("-m", 3)] == [
        "--num_machines", "2", "--num_processes", "16", "--machine_rank", "1", "--rdzv_backend", "c10d"]
    assert plan.command.count("--num_processes") == 1


def test_config_named_in_the_environment_wins_over_the_recipe() -> None:
    plan = plan_launch(stage("cpu"), Path("runs/x"), environ={"COLLAB_ACCELERATE_CONFIG": "fsdp2"}, gpus=0)
    assert plan.config == CONFIGS / "fsdp2.yaml" and plan.world_size == 1


def test_config_given_as_a_path_is_used_as_is(tmp_path: Path) -> None:
    custom = tmp_path / "two.yaml"
    custom.write_text((CONFIGS / "cpu.yaml").read_text().replace("num_processes: 1", "num_processes: 2"))
    plan = plan_launch(stage(str(custom)), Path("runs/x"), environ={}, gpus=0)
    assert plan.config == custom and plan.world_size == 2


def test_unknown_config_lists_the_shipped_ones() -> None:
    with pytest.raises(CollabError, match=r"accelerate config 'zero4' does not exist.*'cpu', 'ddp', 'fsdp2', "
                                          r"'zero2', 'zero3'"):
        plan_launch(stage("zero4"), Path("runs/x"), environ={}, gpus=0)


@pytest.mark.parametrize("name", ["cpu", "ddp", "zero2", "zero3", "fsdp2"])
def test_shipped_config_is_accepted_by_the_installed_accelerate(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))  # raises on unknown top-level keys
    nested = {**(config.deepspeed_config or {}), **(config.fsdp_config or {})}
    assert [key for key in nested if key not in known] == []  # accelerate would silently ignore these
    plan = plan_launch(stage(name), Path("runs/x"), environ={}, gpus=2)
    args, _, _ = _validate_launch_command(parser.parse_args(plan.command[4:]))
    expected = {"cpu": (1, False, False), "ddp": (2, False, False), "zero2": (2, True, False),
                "zero3": (2, True, False), "fsdp2": (2, False, True)}[name]
    assert (args.num_processes, args.use_deepspeed, args.use_fsdp) == expected


# --- running ------------------------------------------------------------------------------------------------------


def script_plan(tmp_path: Path, code: str) -> LaunchPlan:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return LaunchPlan(command=[sys.executable, str(script)], config=CONFIGS / "cpu.yaml", world_size=1)


def test_failing_launch_returns_its_code_and_output_tail(tmp_path: Path) -> None:
    plan = script_plan(tmp_path, """
        import sys
        for i in range(100):
            print(f"line {i}")
        sys.exit(3)
    """)
    out = io.StringIO()
    result = run_launch(plan, StagePaths(tmp_path, "dpo"), out=out)
    assert result.returncode == 3
    assert result.tail.splitlines()[-1] == "line 99" and len(result.tail.splitlines()) == 40
    assert "line 0\n" in out.getvalue()
    assert "line 99" in (tmp_path / "dpo" / "train.log").read_text()


class SignalWhenReady(io.StringIO):
    """Output sink that sends this process a signal once the child says it is ready."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum, self.sent = signum, False

    def write(self, text: str) -> int:
        n = super().write(text)
        if "ready" in self.getvalue() and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return n


WORKER = """
    import signal, sys, time
    got = []
    signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    print("ready", flush=True)
    while not got:
        time.sleep(0.05)
    print("worker saved a checkpoint", flush=True)
    sys.exit(75)
"""

# Like torchrun: the launcher leaves USR1 as it inherited it (ignored) and starts the worker in a session of its own.
LAUNCHER_WITH_OWN_SESSION_WORKER = """
    import signal, subprocess, sys
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    sys.exit(subprocess.run([sys.executable, sys.argv[1]], start_new_session=True).returncode)
"""


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_preemption_signal_to_collab_reaches_the_worker_behind_the_launcher(tmp_path: Path, signum: int) -> None:
    before = signal.getsignal(signum)
    out = SignalWhenReady(signum)
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER))
    plan = script_plan(tmp_path, LAUNCHER_WITH_OWN_SESSION_WORKER)
    plan.command.append(str(worker))
    result = run_launch(plan, StagePaths(tmp_path, "dpo"), out=out)
    assert result.returncode == 75
    assert "worker saved a checkpoint" in out.getvalue()
    assert result.signals == [signal.Signals(signum).name]
    assert signal.getsignal(signum) == before  # the forwarding handler is gone once the launch ended


SLOW_STARTER = """
    import signal, sys, time
    print("ready (still importing)", flush=True)
    time.sleep(1.0)  # a signal now hits the inherited SIG_IGN and is lost
    got = []
    signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        time.sleep(0.05)
    sys.exit(75 if got else 0)
"""


def test_signal_that_arrives_while_the_trainer_starts_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collab.train.driver_launch.RESEND_S", 0.2)
    result = run_launch(script_plan(tmp_path, SLOW_STARTER), StagePaths(tmp_path, "dpo"), out=SignalWhenReady(
        signal.SIGUSR1))
    assert result.returncode == 75 and result.signals == ["SIGUSR1"]
