"""A crash or signal at any point, then the same command, gives the run an uninterrupted run gives."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from eqn.interrupt import InjectedFault, Interrupted
from eqn.io import ConfigError, RunLock
from eqn.run import run
from tests.conftest import ROOT, SMALL_TEXTCNN, TINY, compose_config, eqn_run_command

RUN = [*TINY, *SMALL_TEXTCNN, "trainer.max_epochs=2"]  # analysis() sets pipeline.analyze per crash point
POINTS = [
    "open",
    "fit:coeqn:epoch0",
    "fit:coeqn:val0",
    "fit:coeqn:epoch1",
    "fit:coeqn:val1",
    "fit:coeqn:trained",
    "fit:coeqn:evaluated",
    "fit:coeqn:saved",
    "fit:coeqn:exported",
    "regress1:predicted",
    "regress1:csv",
    "regress1:dataset",
    "fit:eqn:epoch0",
    "fit:eqn:epoch1",
    "fit:eqn:val1",
    "fit:eqn:trained",
    "fit:eqn:evaluated",
    "fit:eqn:saved",
    "analysis",
    "metrics",
]


def outcome(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return (
        {k: v for k, v in metrics.items() if not k.startswith("time/")},
        pd.read_csv(run_dir / "relabeled_train.csv", keep_default_na=False),
    )


def analysis(point: str) -> list[str]:
    """The analysis (1 s of figures per run) only where the crash is at or after it; before it, it is off on both
    sides of the comparison."""
    return [f"pipeline.analyze={str(point in ('analysis', 'metrics')).lower()}"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run's outcome, with and without the analysis (each made once, when first asked)."""
    made = {}

    def outcome_of(point: str):
        key = tuple(analysis(point))
        if key not in made:
            tmp = tmp_path_factory.mktemp("reference")
            run(compose_config(*RUN, *key, tmp_path=tmp), run_dir=str(tmp / "run"))
            made[key] = outcome(tmp / "run")
        return made[key]

    return outcome_of


@pytest.mark.parametrize("point", POINTS)
def test_crash_anywhere_then_resume_matches_an_uninterrupted_run(point, reference, tmp_path, monkeypatch, data_dir):
    cfg = compose_config(*RUN, *analysis(point), tmp_path=tmp_path)
    monkeypatch.setenv("EQN_FAULT_AT", point)
    with pytest.raises(InjectedFault, match=point):
        run(cfg, run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / ".lock").exists()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "stages").glob("*/done.json")}
    monkeypatch.delenv("EQN_FAULT_AT")
    run(cfg, run_dir=str(tmp_path / "run"))
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished stages are not redone
    metrics, relabeled = outcome(tmp_path / "run")
    expected = reference(point)
    assert metrics == pytest.approx(expected[0], abs=1e-5)
    pd.testing.assert_frame_equal(relabeled, expected[1])
    assert (tmp_path / "run" / "analysis").is_dir() == (point in ("analysis", "metrics"))


def test_a_run_dir_moved_after_a_crash_resumes_as_if_it_had_not(reference, tmp_path, monkeypatch, data_dir):
    """Interrupted in a stage's second epoch, the run dir is moved (another disk, another node's path) and resumed
    there: the checkpoint keeps its best score and file names (no best-v1.ckpt beside best.ckpt) and the run ends
    as an uninterrupted one."""
    import shutil

    point = "fit:coeqn:epoch1"
    cfg = compose_config(*RUN, *analysis(point), tmp_path=tmp_path)
    monkeypatch.setenv("EQN_FAULT_AT", point)
    with pytest.raises(InjectedFault, match=point):
        run(cfg, run_dir=str(tmp_path / "run"))
    monkeypatch.delenv("EQN_FAULT_AT")
    shutil.move(tmp_path / "run", tmp_path / "moved")
    run(cfg, run_dir=str(tmp_path / "moved"))
    stage_files = sorted(p.name for p in (tmp_path / "moved" / "stages").glob("*/*.ckpt"))
    assert not [name for name in stage_files if "-v" in name], stage_files
    metrics, relabeled = outcome(tmp_path / "moved")
    expected = reference(point)
    assert metrics == pytest.approx(expected[0], abs=1e-5)
    pd.testing.assert_frame_equal(relabeled, expected[1])


def test_a_resumed_stage_keeps_its_csv_log(tmp_path, monkeypatch, data_dir):
    """Crashed in its second epoch and resumed, a stage's logs/<stage>/metrics.csv holds every epoch's validation
    row, as an uninterrupted run's does (Lightning's CSV writer would have started the file again)."""
    cfg = compose_config(*RUN, "pipeline=coeqn", "logger=csv", tmp_path=tmp_path)
    run(cfg, run_dir=str(tmp_path / "straight"))
    monkeypatch.setenv("EQN_FAULT_AT", "fit:coeqn:epoch1")
    with pytest.raises(InjectedFault):
        run(cfg, run_dir=str(tmp_path / "run"))
    monkeypatch.delenv("EQN_FAULT_AT")
    run(cfg, run_dir=str(tmp_path / "run"))

    def val_rows(folder):
        logged = pd.read_csv(folder / "logs" / "coeqn" / "metrics.csv").dropna(subset=["val/loss"])
        return logged[["epoch", "step", "val/loss"]].reset_index(drop=True)

    assert list(val_rows(tmp_path / "run").epoch) == [0, 1]
    pd.testing.assert_frame_equal(val_rows(tmp_path / "run"), val_rows(tmp_path / "straight"), atol=1e-5)


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}"):
            with RunLock(tmp_path):
                pass
    (tmp_path / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    with RunLock(tmp_path):  # a stale lock of a dead process is taken over
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_refused_resume_leaves_the_run_dir_untouched(tmp_path, data_dir):
    args = eqn_run_command(tmp_path, tmp_path / "run", *RUN, "pipeline=coeqn")
    assert subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300).returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != "run.log"}
    refused = subprocess.run([*args, "model.optimizer.lr=0.5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "different config or data" in refused.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != "run.log"}
    assert after == before
    assert "lr: 0.001" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()


SIGNALLED = [*RUN, "pipeline=coeqn"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_real_signal_during_training_exits_nonzero_and_resumes(sig, tmp_path, data_dir):
    """A real `eqn.run` process gets a real signal in the middle of its second epoch (sent at a fault point, so the
    moment is known without a long run to aim at), exits non-zero with the resume hint, and the same run resumes.
    (SIGKILL, which no handler sees: test_resume.py::test_sigkill_during_stage_two_then_resume.)"""
    run_dir = tmp_path / "run"
    args = eqn_run_command(tmp_path, run_dir, *SIGNALLED)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EQN_FAULT_AT": "fit:coeqn:epoch1", "EQN_FAULT_SIGNAL": str(int(sig))}
    # a run started from a background job inherits SIGINT ignored (and then rightly keeps ignoring it): start the
    # child as a foreground run would be, with SIGINT at its default
    proc = subprocess.run(
        args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err = proc.stderr
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"interrupted by {signal.Signals(sig).name}" in err and f"hydra.run.dir={run_dir}" in err
    assert not (run_dir / ".lock").exists()
    assert (run_dir / "stages" / "coeqn" / "last.ckpt").exists() and not (run_dir / "metrics.json").exists()
    metrics = run(compose_config(*SIGNALLED, tmp_path=tmp_path), run_dir=str(run_dir))  # the same run, resumed
    assert "coeqn/test/f1_macro" in metrics
    assert json.loads((run_dir / "metrics.json").read_text())["coeqn/test/f1_macro"] == metrics["coeqn/test/f1_macro"]


def test_interrupted_is_raised_by_the_handlers(monkeypatch):
    from eqn.interrupt import interruptible

    with interruptible():
        with pytest.raises(Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_lock_left_on_another_host_or_held_by_a_live_process_elsewhere(tmp_path):
    """The run lock is a kernel lock held as long as its process lives: a lock file left by a process on another
    node (a SLURM requeue onto a new host) is taken over; a live holder in another process refuses, or is waited
    for."""
    import subprocess
    import time

    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": "another-node"}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["host"] == os.uname().nodename
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from eqn.io import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(2)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
        RunLock(tmp_path).__enter__()
    started = time.monotonic()
    with RunLock(tmp_path, wait=30):  # waits for the holder to end
        assert 0.5 < time.monotonic() - started < 30  # the holder slept 2 s after printing
    holder.wait()
    assert not (tmp_path / ".lock").exists()


def test_shards_merge_even_after_a_merger_died(tmp_path):
    """A merge lock left by a shard that died (on any host) does not leave the output unmerged forever."""
    from eqn.annotate import merge_parts
    from eqn.io import write_text

    parts = tmp_path / "out.csv.parts"
    for c, rows in enumerate(["text\na\n", "text\nb\n"]):
        write_text(parts / f"chunk-{c:08d}.csv", rows)
    (parts / ".lock").write_text(json.dumps({"pid": 1, "host": "node-that-died"}))
    assert merge_parts(parts, 2, tmp_path / "out.csv", "csv")
    assert (tmp_path / "out.csv").read_text() == "text\na\nb\n"
