"""DDP on CPU (gloo): label regression gathered by sample index equals a single-process prediction."""

import json
import os
import subprocess
import sys

import pytest
import torch
from lightning.pytorch import Trainer

from eqn.data.datamodule import EQNDataModule
from eqn.models.module import EQNModule
from eqn.predict import predict_scores
from eqn.targets import regress_targets
from tests.conftest import ROOT, TINY


def test_two_process_regression_equals_one_process(trained_run, data_dir, tmp_path):
    ckpt = trained_run / "checkpoints" / "coeqn.ckpt"
    module = EQNModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    # 399 rows: DistributedSampler pads the 2 shards by repeating a row, which must not be counted twice
    dm = EQNDataModule(
        "goemotions",
        str(data_dir),
        tokenizer={"kind": "word"},
        encoder=module.hparams.encoder,
        max_train_samples=399,
        max_eval_samples=50,
        eval_batch_size=64,
    ).prepare()
    n = len(dm.split("train"))
    common = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    one = predict_scores(Trainer(devices=1, **common), module, dm.predict_loader("train"), n)
    two = predict_scores(Trainer(devices=2, strategy="ddp_spawn", **common), module, dm.predict_loader("train"), n)
    assert one.shape == two.shape == (399, 28)
    assert not torch.isnan(two).any()
    assert torch.allclose(one, two, atol=1e-5)
    gold = dm.gold["train"]
    assert torch.allclose(regress_targets(gold, one), regress_targets(gold, two), atol=1e-5)


@pytest.mark.slow  # ~60 s: 8 spawned processes; DDP itself is in `make test` (the test above)
def test_ddp_pipeline_inside_a_multirun_sweep(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "eqn.run",
        "-m",
        "seed=0,1",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "pipeline=coeqn",
        *TINY,
        "data.max_train_samples=120",
        "data.max_eval_samples=60",
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(args, cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [p.name for p in runs] == ["0_goemotions-textcnn-coeqn-s0", "1_goemotions-textcnn-coeqn-s1"]
    for run_dir in runs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {"coeqn/test/f1_macro", "coeqn/val/mse"} <= metrics.keys()
        assert metrics["data/test_rows"] == 60
