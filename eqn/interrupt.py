"""Interruptions that tell the truth: SIGINT/SIGTERM become an `Interrupted` error (non-zero exit, resume hint),
training callbacks that make a resumed stage repeat the uninterrupted one, and named fault points that tests
use to crash a run anywhere (`EQN_FAULT_AT=<point>`)."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import torch
from lightning.pytorch import Callback


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
    if os.environ.get("EQN_FAULT_AT") == name:
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


class TrainingState(Callback):
    """Stores torch's RNG state in every checkpoint and restores it on resume (dropout masks then repeat), and
    hosts the in-training fault points."""

    def __init__(self, stage: str):
        self.stage = stage

    def state_dict(self) -> dict:
        return {"torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 1:
            fault_point(f"fit:{self.stage}:epoch{trainer.current_epoch}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            fault_point(f"fit:{self.stage}:val{trainer.current_epoch}")
