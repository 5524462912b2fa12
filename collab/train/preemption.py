"""Stopping cleanly on a preemption warning.

Slurm announces the end of a job (time limit, or preemption with `preempt_send_user_signal`) with SIGUSR1 (the
`--signal` option) and finally SIGTERM. The trainer process handles both the same way: the handler only sets a
flag; `PreemptionCallback` sees it at the end of the current optimizer step, makes the Trainer save a checkpoint
there and stop, and the process exits with `EXIT_PREEMPTED` (75, EX_TEMPFAIL) so the job script knows to requeue.
`collab resume RUN_DIR` then continues from that checkpoint.

With several processes the flag is combined across ranks at every step end (one tiny all-reduce), so all ranks
save the same step even when the signal reaches them a step apart.

This module imports nothing heavy: the trainer process installs the handlers before it imports torch and TRL.
The callback lives in `collab.train.callbacks`.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

EXIT_PREEMPTED = 75
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class PreemptionFlag:
    """Set by a signal handler, read by the training loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signum: int = signal.SIGUSR1) -> None:
        self.signal_name = signal.Signals(signum).name

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
            print(f"collab: {signal.Signals(signum).name} received: saving a checkpoint at the end of this step, "
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
