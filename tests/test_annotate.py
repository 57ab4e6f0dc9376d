import hashlib
import io
import sys

import pandas as pd
import pytest

from eqn import load
from eqn.annotate import annotate_file, main
from eqn.io import DataError

TEXTS = ["I love this so much, thank you!", "This is terrible and I am angry.", "What? I did not expect that",
         "ok", "Is this real? wow"]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ckpt(trained_run):
    return trained_run / "checkpoints" / "eqn.ckpt"


def check_annotated(frame, input_columns, labels):
    assert list(frame.columns) == [*input_columns, *labels, "emotions"]
    values = frame[labels].to_numpy(dtype=float)
    assert values.min() >= 0.0 and values.max() <= 10.0
    assert (values.round(2) == values).all()
    for _, row in frame.iterrows():
        emotions = row["emotions"].split(",")
        assert row[emotions[0]] == max(row[n] for n in labels) and set(emotions) <= set(labels)
        scores = [row[e] for e in emotions]
        assert scores == sorted(scores, reverse=True)


def test_python_api_annotates_texts(ckpt):
    model = load(str(ckpt))
    frame = model.annotate(TEXTS)
    assert len(frame) == len(TEXTS) and frame["text"].tolist() == TEXTS
    check_annotated(frame, ["text"], model.label_names)
    assert len(model.label_names) == 28 and model.thresholds.shape == (28,)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_file_round_trip_keeps_input_columns_and_input_bytes(ckpt, tmp_path, fmt):
    source = pd.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "body": TEXTS, "extra": range(len(TEXTS))})
    path = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        source.to_json(path, orient="records", lines=True)
    else:
        source.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    before = sha(path)
    out = tmp_path / f"out.{fmt}"
    stats = annotate_file(str(ckpt), str(path), str(out), text_column="body", chunk_size=2, progress=False)
    assert sha(path) == before
    assert stats["texts"] == len(TEXTS) and stats["texts_per_s"] > 0
    frame = (pd.read_json(out, lines=True, dtype=False, precise_float=True) if fmt == "jsonl"
             else pd.read_csv(out, sep="\t" if fmt == "tsv" else ",", keep_default_na=False))
    check_annotated(frame, ["id", "body", "extra"], load(str(ckpt)).label_names)
    assert frame["body"].tolist() == TEXTS  # order kept across chunks
    api = load(str(ckpt)).annotate(TEXTS)
    assert frame["emotions"].tolist() == api["emotions"].tolist()


def test_stdin_plain_text(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n"))
    out = tmp_path / "out.csv"
    main([f"ckpt={ckpt}", "input=-", f"output={out}", "progress=false", "chunk_size=2"])
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame["text"].tolist() == TEXTS


def test_refuses_to_overwrite_and_interrupted_write_leaves_nothing(ckpt, tmp_path, monkeypatch):
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(path, index=False)
    out = tmp_path / "out.csv"
    out.write_text("precious")
    with pytest.raises(DataError, match="overwrite=true"):
        annotate_file(str(ckpt), str(path), str(out), progress=False)
    assert out.read_text() == "precious"
    with pytest.raises(DataError, match="overwrite the input"):
        annotate_file(str(ckpt), str(path), str(path), overwrite=True, progress=False)

    import eqn.annotate as annotate

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(annotate, "write_chunk", crash)
    fresh = tmp_path / "fresh.csv"
    with pytest.raises(KeyboardInterrupt):
        annotate_file(str(ckpt), str(path), str(fresh), progress=False)
    with pytest.raises(KeyboardInterrupt):
        annotate_file(str(ckpt), str(path), str(out), overwrite=True, progress=False)
    assert not fresh.exists() and out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


@pytest.mark.parametrize("case", ["empty", "header_only", "no_column", "directory", "missing"])
def test_bad_annotation_input(ckpt, tmp_path, case):
    path = tmp_path / "in.csv"
    if case == "empty":
        path.write_text("")
    elif case == "header_only":
        path.write_text("text\n")
    elif case == "no_column":
        path.write_text("body\nhello\n")
    elif case == "directory":
        path.mkdir()
    message = {"empty": "empty", "header_only": "empty", "no_column": "no column 'text'", "directory": "directory",
               "missing": "not found"}[case]
    with pytest.raises(DataError, match=message) as err:
        annotate_file(str(ckpt), str(path), str(tmp_path / "out.csv"), progress=False)
    assert str(path) in str(err.value)
    assert not (tmp_path / "out.csv").exists()
