"""Parallel local jobs on a multi-GPU machine each get their own GPUs (simulated device count on CPU)."""

import threading
import time

import pytest
import torch

from eqn import gpus
from tests.conftest import compose_config


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_jobs_at_once_follow_the_gpu_count(four_gpus):
    assert gpus.parallel_jobs("gpu", 1) == 4 and gpus.parallel_jobs("gpu", 2) == 2
    assert gpus.parallel_jobs("cpu", 1) == 2  # a CPU run: two jobs (one torch thread each)


def test_each_job_takes_its_own_group_and_a_late_one_waits(tmp_path):
    pool = tmp_path / ".gpus"
    with gpus.gpu_slot(pool, 2, 4) as first, gpus.gpu_slot(pool, 2, 4) as second:
        assert (first, second) == ([0, 1], [2, 3])
        got = []
        waiter = threading.Thread(target=lambda: got.append(_hold(pool)))
        waiter.start()
        time.sleep(0.3)
        assert not got  # both groups busy: the third job waits
    waiter.join(timeout=5)
    assert got == [[0, 1]]  # the first group to come free


def _hold(pool):
    with gpus.gpu_slot(pool, 2, 4, poll_s=0.05) as ids:
        return ids


def test_parallel_jobs_get_distinct_devices_and_the_same_fingerprint(four_gpus, tmp_path):
    from eqn.rundir import result_config

    a, b = compose_config("trainer=gpu", tmp_path=tmp_path), compose_config("trainer=gpu", tmp_path=tmp_path)
    with gpus.job_gpus(a, tmp_path), gpus.job_gpus(b, tmp_path):
        assert (a.trainer.devices, b.trainer.devices) == ([0], [1])
        assert result_config(a) == result_config(b)  # which GPU a job got does not change its results
    alone = compose_config("trainer=gpu", tmp_path=tmp_path)
    with gpus.job_gpus(alone, None):  # not a parallel local job: Lightning's own choice
        assert alone.trainer.devices == 1
