"""One GPU (or `trainer.devices` GPUs) for each parallel local job of a sweep (`cluster=joblib trainer=gpu`).

Parallel jobs on one machine share a pool of slot locks in the sweep dir (`<sweep dir>/.gpus/slot-<k>.lock`, one
per group of `trainer.devices` GPUs, held with flock for the job's lifetime): a job takes the first free group and
trains on exactly those GPUs (`trainer.devices=[k, ...]`, which works even in a worker process where CUDA is already
initialised); a job that finds every group busy waits for one. The launcher runs G ÷ devices jobs at once
(`cluster=joblib` sets n_jobs from the GPU count on a GPU machine). A finished or killed job frees its slot.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parallel_jobs(accelerator: str, devices, cores_jobs: int = 2) -> int:
    """Jobs at once on this machine: G // devices on a GPU machine for a GPU run, else `cores_jobs`."""
    g = gpu_count() if str(accelerator) in ("gpu", "cuda", "auto") else 0
    per_job = devices if isinstance(devices, int) and devices > 0 else 1
    return max(1, g // per_job) if g >= per_job and g > 1 else cores_jobs


@contextmanager
def gpu_slot(pool: Path, devices: int, total: int, poll_s: float = 2.0) -> Iterator[list[int]]:
    """Hold the first free group of `devices` GPUs out of `total`; yields their indices."""
    groups = [list(range(k, k + devices)) for k in range(0, total - devices + 1, devices)]
    if not groups:
        raise ValueError(f"trainer.devices={devices}: this machine has only {total} GPU(s)")
    pool.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for k, ids in enumerate(groups):
            fd = os.open(pool / f"slot-{k}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield ids
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if not waited:
            log.info("every GPU group is busy; waiting for one")
            waited = True
        time.sleep(poll_s)


def local_parallel_sweep() -> Path | None:
    """The sweep dir when this process is a job of a parallel local (joblib) sweep, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
    except ValueError:
        return None
    launcher = getattr(hydra, "launcher", None)
    target = str(launcher.get("_target_", "")) if launcher else ""
    if "joblib" not in target.lower() or str(hydra.mode) != "RunMode.MULTIRUN":
        return None
    return Path(hydra.sweep.dir)


@contextmanager
def job_gpus(cfg, sweep_dir: Path | None) -> Iterator[None]:
    """Give this job its own GPUs when it is one of several parallel local jobs on a multi-GPU machine."""
    accelerator, devices = str(cfg.trainer.accelerator), cfg.trainer.devices
    total = gpu_count()
    if sweep_dir is None or accelerator not in ("gpu", "cuda", "auto") or total < 2 or not isinstance(devices, int):
        yield
        return
    with gpu_slot(sweep_dir / ".gpus", devices, total) as ids:
        log.info("parallel job on GPU(s) %s", ids)
        cfg.trainer.devices = ids
        yield
