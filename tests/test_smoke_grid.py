"""Every (dataset, backbone) pair through the real configs for a handful of steps."""

import json
import shutil

import pytest

from eqn.run import run
from tests.conftest import FIXTURES_DIR, TINY, compose_config, needs

DATASETS = ["goemotions", "emotion6", "tfn3", "tsa3", "health7"]
BACKBONES = ["ann", "cnn", "lstm", "textcnn", "tiny_bert", pytest.param("minilm", marks=pytest.mark.slow)]
RUN = [
    *TINY,
    "data.max_train_samples=40",
    "data.max_eval_samples=21",
    "data.max_length=32",
    "trainer.limit_train_batches=2",
    "model.batch_size=16",
]  # every backbone on every dataset


@pytest.mark.slow  # 15 s; the pretrained MiniLM path is in the fast suite through test_share's export test
def test_minilm_runs_the_eqn_pipeline(tmp_path, data_dir):
    """The real pretrained weights through the whole EQN pipeline on emotion6; every dataset under -m slow."""
    needs("emotion6")
    test_pair_runs_the_eqn_pipeline("emotion6", "minilm", tmp_path, data_dir)


@pytest.mark.parametrize("model", BACKBONES)
@pytest.mark.parametrize("data", DATASETS)
def test_pair_runs_the_eqn_pipeline(data, model, tmp_path, data_dir):
    needs(data)
    extra = []
    if data == "health7":
        (tmp_path / "health7").mkdir()
        shutil.copy(FIXTURES_DIR / "health7_combined_data.csv", tmp_path / "health7" / "Combined Data.csv")
        extra = [f"paths.data_dir={tmp_path}", "data.max_train_samples=null", "data.max_eval_samples=null"]
    cfg = compose_config(f"data={data}", f"model={model}", *RUN, *extra, tmp_path=tmp_path)
    metrics = run(cfg, run_dir=str(tmp_path / "run"))
    for stage in ("coeqn", "eqn"):
        for split in ("val", "test"):
            for key in ("f1_macro", "f1_micro", "accuracy", "mse"):
                assert 0.0 <= metrics[f"{stage}/{split}/{key}"] or key == "mse"
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written.keys() == metrics.keys()
