"""Interruptions that tell the truth: SIGINT/SIGTERM become an `Interrupted` error (non-zero exit, resume hint),
and named fault points that tests use to crash a run anywhere (`EQN_FAULT_AT=<point>`). The callback that makes a
resumed stage repeat the uninterrupted one is `eqn.callbacks.TrainingState`."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator


class Interrupted(BaseException):
    """The run got SIGINT or SIGTERM; everything finished so far is on disk. A BaseException (like
    KeyboardInterrupt), so that no `except Exception` in eqn or a library it calls can swallow it and let an
    interrupted run finish with exit code 0."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class InjectedFault(RuntimeError):
    """Raised at a named fault point (tests)."""


def fault_point(name: str) -> None:
    """At the point named by EQN_FAULT_AT: raise InjectedFault, or with EQN_FAULT_SIGNAL=<n> send this process the
    real signal n (as `kill -n` from outside would, but at a known point of the run)."""
    if os.environ.get("EQN_FAULT_AT") == name:
        if os.environ.get("EQN_FAULT_SIGNAL"):
            os.kill(os.getpid(), int(os.environ["EQN_FAULT_SIGNAL"]))
            time.sleep(5)  # the signal arrives; a handled one raises Interrupted from here
        raise InjectedFault(f"fault injected at {name}")


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread for the duration. A SIGTERM handler installed by
    someone else (submitit's pre-emption handling on SLURM) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current in (signal.SIG_DFL, signal.default_int_handler, None):
            previous[sig] = current
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
