"""Stopping cleanly on a preemption warning.

Slurm announces the end of a job (time limit, or preemption with `preempt_send_user_signal`) with SIGUSR1 (the
`--signal` option) and finally SIGTERM. The trainer process handles both the same way: the handler only sets a
flag; `PreemptionCallback` sees it at the end of the current optimizer step, makes the Trainer save a checkpoint
there and stop, and the process exits with `EXIT_PREEMPTED` (75, EX_TEMPFAIL) so the job script knows to requeue.
`collab resume RUN_DIR` then continues from that checkpoint.

With several processes the flag is combined across ranks at every step end (one tiny all-reduce), so all ranks
save the same step even when the signal reaches them a step apart.

The two signals differ in how much time is left. USR1 comes `--signal-s` seconds (default 600) before the end, so
the step in progress and the save fit. SIGTERM is Slurm's last word: the processes are killed (SIGKILL) KillWait
seconds later (`scontrol show config | grep KillWait`; 30 s by default; preemption adds the partition's GraceTime
before the SIGTERM, not after). That KillWait is the grace period: the save lands only when the rest of the step
plus the checkpoint write fit in it. Set COLLAB_SIGTERM_GRACE_S to your cluster's KillWait so the log says how
close it was; a save cut off half-way leaves an incomplete checkpoint folder, which the next start removes before
continuing from the previous complete one.

This module imports nothing heavy: the trainer process installs the handlers before it imports torch and TRL.
The callback lives in `collab.train.callbacks`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

EXIT_PREEMPTED = 75
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
SIGTERM_GRACE_ENV = "COLLAB_SIGTERM_GRACE_S"
DEFAULT_SIGTERM_GRACE_S = 30.0  # Slurm's default KillWait


def sigterm_grace_s() -> float:
    """Seconds between SIGTERM and SIGKILL on this cluster (COLLAB_SIGTERM_GRACE_S, else Slurm's default)."""
    raw = os.environ.get(SIGTERM_GRACE_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_SIGTERM_GRACE_S
    except ValueError:
        return DEFAULT_SIGTERM_GRACE_S


class PreemptionFlag:
    """Set by a signal handler, read by the training loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.received_at: float | None = None  # time.monotonic() of the first signal

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signum: int = signal.SIGUSR1) -> None:
        self.signal_name = signal.Signals(signum).name
        self.received_at = time.monotonic()

    def stop_note(self) -> str:
        """What the log says when the stop happens: for SIGTERM, the seconds used of the grace period."""
        if self.signal_name != "SIGTERM" or self.received_at is None:
            return f"stopping on {self.signal_name}"
        used, grace = time.monotonic() - self.received_at, sigterm_grace_s()
        note = f"stopping on SIGTERM, {used:.0f} s after it arrived (grace period {grace:.0f} s, {SIGTERM_GRACE_ENV})"
        if used > grace * 0.5:
            note += ("; the save may be cut off by SIGKILL: lower the step time or ask for USR1 ahead "
                     "(sbatch --signal=B:USR1@SECONDS, `collab launch slurm --signal-s`)")
        return note

    def install(self) -> None:
        """Handle SIGUSR1 and SIGTERM in this process (also when the launcher started it with them ignored)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in PREEMPTION_SIGNALS:
            signal.signal(signum, self._handle)
            # Restart interrupted system calls (SA_RESTART): collab resends the signal until the trainer stops, and C
            # code (collectives, checkpoint writers) need not expect EINTR.
            signal.siginterrupt(signum, False)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is None:
            self.request(signum)
            left = f" (about {sigterm_grace_s():.0f} s before SIGKILL)" if signum == signal.SIGTERM else ""
            print(f"collab: {signal.Signals(signum).name} received: saving a checkpoint at the end of this step{left}, "
                  f"then stopping (exit code {EXIT_PREEMPTED})", flush=True)


def requested_on_any_rank(local: bool) -> bool:
    """`local` OR-ed over all processes of a distributed run (just `local` in a single process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    from accelerate import PartialState

    flag = torch.tensor([1 if local else 0], device=PartialState().device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
