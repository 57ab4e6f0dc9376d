"""Sharing: exported model folders (transformers-native for BERT + pooler, eqn layout otherwise), the relabeled
training set as a typed Hugging Face dataset, Parquet annotation, and the hub path offline."""

import json
import time

import pandas as pd
import pytest
import torch

from eqn import load
from eqn.annotate import annotate_file
from eqn.export import export, push_to_hub
from eqn.io import ConfigError, DataError
from eqn.model_folder import load_folder
from eqn.run import run
from tests.conftest import TINY, compose_config

TEST_TSV_ROWS = 200


def goemotions_texts(n=TEST_TSV_ROWS):
    from eqn.data import sources

    return sources.load("goemotions", "/nonexistent").splits["test"].texts[:n]


def test_word_backbone_export_round_trips_through_eqn_load(trained_run, tmp_path):
    folder = export(trained_run / "checkpoints" / "eqn.ckpt", tmp_path / "model")
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["eqn"]["backbone"]["_target_"].endswith("TextCNN") and len(config["eqn"]["thresholds"]) == 28
    texts = goemotions_texts()
    original, exported = load(str(trained_run / "checkpoints" / "eqn.ckpt")), load(str(folder))
    assert torch.allclose(original.scores(texts), exported.scores(texts), atol=1e-5)
    assert exported.max_length == original.max_length and torch.equal(exported.thresholds, original.thresholds)
    assert "Intended use and limits" in (folder / "README.md").read_text()


def test_pipeline_exports_every_stage_and_the_relabeled_dataset(trained_run):
    import datasets

    assert (trained_run / "export" / "coeqn" / "model.safetensors").exists()
    assert (trained_run / "export" / "eqn" / "config.json").exists()
    ds = datasets.load_from_disk(str(trained_run / "relabeled"))
    assert ds.features["text"] == datasets.Value("string") and ds.features["admiration"] == datasets.Value("float32")
    assert ds.features["gold"] == datasets.Sequence(datasets.Value("string"))
    assert len(ds) == 400 and all(len(g) >= 1 for g in ds["gold"])
    row = ds[0]
    assert all(row[g] == 10.0 for g in row["gold"])
    csv = pd.read_csv(trained_run / "relabeled_train.csv", keep_default_na=False)
    assert list(csv["id"]) == ds["id"]
    parquet = pd.read_parquet(trained_run / "relabeled_train.parquet")
    assert list(parquet.columns) == list(ds.column_names)
    assert "CC BY 4.0" in (trained_run / "relabeled" / "README.md").read_text()


def test_minilm_pooler_export_is_a_transformers_model(tmp_path, data_dir):
    from transformers import AutoModelForSequenceClassification, pipeline

    cfg = compose_config(
        "model=minilm",
        "model.backbone.pooling=pooler",
        "pipeline=coeqn",
        *TINY,
        "data.max_eval_samples=64",
        "data.max_length=32",
        tmp_path=tmp_path,
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    folder = tmp_path / "run" / "export" / "coeqn"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.problem_type == "regression" and model.config.id2label[27] == "neutral"
    assert model.config.label2id["admiration"] == 0
    texts = goemotions_texts()
    annotate = pipeline("text-classification", model=str(folder), top_k=None, function_to_apply="none")
    results = annotate(texts, truncation=True)
    order = [model.config.id2label[i] for i in range(model.config.num_labels)]
    theirs = torch.tensor([[{r["label"]: r["score"] for r in row}[n] for n in order] for row in results])
    ours = load(str(tmp_path / "run" / "checkpoints" / "coeqn.ckpt")).scores(texts)
    assert torch.allclose(theirs, ours, atol=1e-4)
    back = load_folder(folder)  # eqn.load reads the transformers layout too
    assert torch.allclose(load(str(folder)).scores(texts), ours, atol=1e-4) and back.hparams.max_length == 32


def test_push_to_hub_offline_fails_in_one_line(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="push_to_hub=me/model: HF_HUB_OFFLINE=1 is set"):
        push_to_hub(trained_run / "export" / "eqn", "me/model")
    with pytest.raises(
        DataError,
        match="someone/missing-model: not a local checkpoint or folder: neither a local "
        "folder nor in the Hugging Face cache, and HF_HUB_OFFLINE=1 is set",
    ):
        load("someone/missing-model")


def test_annotate_writes_parquet(trained_run, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("text,keep\nI love it,1\nso angry,2\n")
    annotate_file(
        str(trained_run / "checkpoints" / "eqn.ckpt"),
        str(inp),
        str(tmp_path / "out.parquet"),
        progress=False,
        chunk_size=1,
    )
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert list(frame.columns[:2]) == ["text", "keep"] and len(frame) == 2 and "emotions" in frame


def test_offline_wandb_run_holds_figures_tables_and_the_model_artifact(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config(
        "pipeline=coeqn",
        *TINY,
        "logger=wandb",
        "data.max_train_samples=120",
        "data.max_eval_samples=60",
        tmp_path=tmp_path,
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    media = {p.relative_to(run_dir / "files" / "media").parts[0] for p in (run_dir / "files" / "media").rglob("*.*")}
    assert {"images", "table"} <= media
    images = {p.name.rsplit("_", 2)[0] for p in (run_dir / "files" / "media" / "images" / "figures").glob("*.png")}
    assert images == {"label_correlation", "intensity_distribution", "per_class_f1"}
    tables = [p.name for p in (run_dir / "files" / "media" / "table").rglob("*.json")]
    assert any("annotated_test_sample" in n for n in tables) and any("label_correlation" in n for n in tables)
    wanted, deadline = ("goemotions-textcnn-coeqn-s42-coeqn-model", "model"), time.time() + 30
    while True:  # W&B's service may still be writing the run's last records when finish() has returned
        artifacts = {
            (r.artifact.name, r.artifact.type)
            for r in wandb_records(next(run_dir.glob("*.wandb")))
            if r.WhichOneof("record_type") == "artifact"
        }
        if wanted in artifacts or time.time() > deadline:
            break
        time.sleep(0.2)
    assert wanted in artifacts  # recorded in the offline run


def wandb_records(path):
    """The protobuf records of a .wandb file (a LevelDB-style log: 32 KiB blocks of chunks with 7-byte headers)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, buf, block = path.read_bytes(), 7, b"", 32768  # 7-byte file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record


@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_other_lightning_loggers_work_offline(logger, tmp_path, data_dir):
    cfg = compose_config(
        "pipeline=coeqn",
        *TINY,
        f"logger={logger}",
        "data.max_train_samples=80",
        "data.max_eval_samples=40",
        "trainer.log_every_n_steps=1",
        tmp_path=tmp_path,
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    if logger == "tensorboard":
        assert list((tmp_path / "run" / "logs" / "coeqn").glob("events.out.tfevents.*"))
    else:
        (metrics,) = (tmp_path / "run" / "mlruns").glob("*/*/metrics")
        logged = {str(p.relative_to(metrics)) for p in metrics.rglob("*") if p.is_file()}
        assert {"test/f1_macro", "val/loss", "train/loss"} <= logged


def test_max_length_of_training_is_carried_into_annotation(tmp_path, data_dir):
    cfg = compose_config(
        "pipeline=coeqn",
        *TINY,
        "data.max_length=12",
        "data.max_train_samples=60",
        "data.max_eval_samples=30",
        tmp_path=tmp_path,
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    model = load(str(tmp_path / "run" / "checkpoints" / "coeqn.ckpt"))
    assert model.max_length == 12 and load(str(tmp_path / "run" / "export" / "coeqn")).max_length == 12
    long = "word " * 50
    assert torch.equal(model.scores([long]), model.scores([long + "extra words beyond the limit"]))
