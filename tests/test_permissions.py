"""Files and folders eqn writes end with the permissions an ordinary open()/mkdir() gives: 0666 / 0777 minus the
umask (a temporary file from mkstemp starts at 0600; a colleague on a shared filesystem must be able to read a run)."""

import os
import shutil
import stat
from contextlib import contextmanager

import pandas as pd
import pytest
import torch

from eqn.annotate import annotate_file
from eqn.export import export
from eqn.io import save_tensors, write_json
from eqn.report import report


@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder):
    return {
        p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [folder, *folder.rglob("*")]
        if not p.is_symlink()
    }


def expected(path, mask):
    return (0o777 if path.is_dir() else 0o666) & ~mask


def test_the_pipelines_own_files_follow_the_default_umask(trained_run):
    mask = 0o022  # the session's umask when the shared run was made
    written = [
        "metrics.json",
        "config.yaml",
        "fingerprint.json",
        "checkpoints/eqn.ckpt",
        "relabeled_train.csv",
        "relabeled_train.parquet",
        "relabeled",
        "relabeled/README.md",
        "export/eqn",
        "export/eqn/README.md",
        "export/eqn/model.safetensors",
        "stages/eqn/test_scores.safetensors",
        "stages/eqn/done.json",
        "analysis/correlation.csv",
    ]
    for name in written:
        path = trained_run / name
        assert stat.S_IMODE(path.stat().st_mode) == expected(path, mask), name


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_writer_honours_the_umask(trained_run, tmp_path, mask):
    ckpt = trained_run / "checkpoints" / "eqn.ckpt"
    inp = tmp_path / "in.csv"
    pd.DataFrame({"text": ["happy", "sad"]}).to_csv(inp, index=False)
    with umask(mask):
        out = tmp_path / "out"
        out.mkdir()
        write_json(out / "m.json", {"a": 1})
        save_tensors(out / "t.safetensors", {"x": torch.zeros(2)})
        export(ckpt, out / "model")
        annotate_file(str(ckpt), str(inp), str(out / "annotated.csv"), progress=False)
        annotate_file(str(ckpt), str(inp), str(out / "sharded.csv"), progress=False, shards=2, shard=0)
        annotate_file(str(ckpt), str(inp), str(out / "sharded.csv"), progress=False, shards=2, shard=1)
        runs = tmp_path / "runs"
        shutil.copytree(trained_run, runs / "run")
        report(runs, out=out / "report", resamples=10)
    wrong = {
        name: oct(mode)
        for name, mode in modes(out).items()
        if mode != expected(out / name if name != "." else out, mask)
    }
    assert not wrong
