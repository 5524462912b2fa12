"""A preemption signal becomes a checkpoint at the end of the current step and a stop."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from collab.train.callbacks import PreemptionCallback
from collab.train.preemption import EXIT_PREEMPTED, PreemptionFlag


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_sets_the_flag_instead_of_killing_the_process(restore_handlers: None, signum: int) -> None:
    flag = PreemptionFlag()
    flag.install()
    os.kill(os.getpid(), signum)
    assert flag.requested and flag.signal_name == signal.Signals(signum).name


def step_end(callback: PreemptionCallback, step: int) -> TrainerControl:
    state = TrainerState()
    state.global_step = step
    return callback.on_step_end(TrainingArguments(output_dir="/tmp/unused", use_cpu=True), state, TrainerControl())


def test_callback_saves_and_stops_at_the_step_after_the_signal() -> None:
    flag = PreemptionFlag()
    callback = PreemptionCallback(flag)
    control = step_end(callback, 3)
    assert (control.should_save, control.should_training_stop, callback.stopped_at) == (False, False, None)
    flag.request(signal.SIGUSR1)
    control = step_end(callback, 4)
    assert (control.should_save, control.should_training_stop, callback.stopped_at) == (True, True, 4)


def test_preempted_exit_code_is_ex_tempfail() -> None:
    assert EXIT_PREEMPTED == 75  # slurm/train.slurm requeues on it


def test_sigterm_is_handled_like_usr1_and_the_stop_reports_the_grace_period(
    restore_handlers: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLLAB_SIGTERM_GRACE_S", "45")
    flag = PreemptionFlag()
    flag.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert "SIGTERM received: saving a checkpoint at the end of this step (about 45 s before SIGKILL)" in (
        capsys.readouterr().out)
    callback = PreemptionCallback(flag)
    control = step_end(callback, 7)
    assert (control.should_save, control.should_training_stop, callback.stopped_at) == (True, True, 7)
    out = capsys.readouterr().out
    assert "step 7: stopping on SIGTERM, 0 s after it arrived (grace period 45 s, COLLAB_SIGTERM_GRACE_S)" in out
    assert "may be cut off" not in out


def test_a_sigterm_stop_late_in_the_grace_period_warns_that_the_save_may_be_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLAB_SIGTERM_GRACE_S", "30")
    flag = PreemptionFlag()
    flag.request(signal.SIGTERM)
    assert flag.received_at is not None
    flag.received_at -= 20  # the step in progress took 20 s of the 30 to end
    note = flag.stop_note()
    assert note.startswith("stopping on SIGTERM, 20 s after it arrived (grace period 30 s")
    assert "--signal=B:USR1@SECONDS" in note
