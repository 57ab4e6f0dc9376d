"""End-to-end runs of the real configs on a few hundred GoEmotions rows."""

import json

import pandas as pd
import pytest

from eqn.io import load_tensors
from eqn.run import run
from tests.conftest import TINY, compose_config

SMALL = [*TINY, "data.max_train_samples=300", "data.max_eval_samples=200", "logger=csv"]


def check_run_dir(run_dir, stages, data):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage in stages:
        for split in ("val", "test"):
            for metric in ("f1_macro", "f1_micro", "accuracy"):
                value = metrics[f"{stage}/{split}/{metric}"]
                assert isinstance(value, float) and 0.0 <= value <= 1.0
        assert (run_dir / "checkpoints" / f"{stage}.ckpt").exists()
    assert all(isinstance(v, float) for v in metrics.values())
    assert (run_dir / "config.yaml").exists()
    return metrics


@pytest.mark.parametrize("model", ["textcnn", "tiny_bert"])
def test_eqn_pipeline_end_to_end(model, tmp_path, data_dir):
    cfg = compose_config(f"model={model}", *SMALL, tmp_path=tmp_path)
    run_dir = tmp_path / "run"
    run(cfg, run_dir=str(run_dir))
    metrics = check_run_dir(run_dir, ["coeqn", "eqn"], data_dir)
    assert metrics["eqn/test/mse"] >= 0

    relabeled = pd.read_csv(run_dir / "relabeled_train.csv", keep_default_na=False)
    from eqn.data.sources import load

    labels = load("goemotions", data_dir).label_names
    assert list(relabeled.columns) == ["id", "text", *labels]
    assert len(relabeled) == 300
    values = relabeled[labels].to_numpy()
    assert values.min() >= 0.0 and values.max() <= 10.0
    targets = load_tensors(run_dir / "stages" / "regress1" / "targets.safetensors")[0]["train"]
    gold = targets == 10.0
    # gold cells are exactly 10 in the file; at least one gold per row; non-gold cells were regressed
    assert (values[gold.numpy()] == 10.0).all()
    assert gold.sum(1).min() >= 1
    assert ((values > 0) & (values < 10)).any()
    assert relabeled["id"].str.len().min() > 0


def test_baseline_pipeline(tmp_path, data_dir):
    cfg = compose_config("pipeline=baseline", *SMALL, tmp_path=tmp_path)
    run(cfg, run_dir=str(tmp_path / "run"))
    metrics = check_run_dir(tmp_path / "run", ["baseline"], data_dir)
    assert "baseline/test/mse" not in metrics  # a classifier has no intensities


def test_coeqn_only_and_seed_zero(tmp_path, data_dir):
    cfg = compose_config("pipeline=coeqn", "seed=0", *SMALL, tmp_path=tmp_path)
    assert cfg.seed == 0 and cfg.data.seed == 0
    run(cfg, run_dir=str(tmp_path / "run"))
    check_run_dir(tmp_path / "run", ["coeqn"], data_dir)
    assert not (tmp_path / "run" / "relabeled_train.csv").exists()
