import hashlib
import io
import os
import sys

import pandas as pd
import pytest
import torch

from eqn import load
from eqn.annotate import annotate_file, main
from eqn.io import ConfigError, DataError

TEXTS = [
    "I love this so much, thank you!",
    "This is terrible and I am angry.",
    "What? I did not expect that",
    "ok",
    "Is this real? wow",
]


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
    frame = (
        pd.read_json(out, lines=True, dtype=False, precise_float=True)
        if fmt == "jsonl"
        else pd.read_csv(out, sep="\t" if fmt == "tsv" else ",", keep_default_na=False)
    )
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
    with pytest.raises(ConfigError, match="overwrite=true"):
        annotate_file(str(ckpt), str(path), str(out), progress=False)
    with pytest.raises(ConfigError, match="not written by eqn"):
        annotate_file(str(ckpt), str(path), str(out), overwrite=True, progress=False)
    assert out.read_text() == "precious"
    with pytest.raises(ConfigError, match="is the input"):
        annotate_file(str(ckpt), str(path), str(path), overwrite=True, progress=False)
    annotate_file(str(ckpt), str(path), str(tmp_path / "mine.csv"), progress=False)
    before = (tmp_path / "mine.csv").read_bytes()

    import eqn.tables as tables

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tables.ChunkWriter, "write", crash)
    fresh = tmp_path / "fresh.csv"
    with pytest.raises(KeyboardInterrupt):
        annotate_file(str(ckpt), str(path), str(fresh), progress=False)
    with pytest.raises(KeyboardInterrupt):
        annotate_file(str(ckpt), str(path), str(tmp_path / "mine.csv"), overwrite=True, progress=False)
    assert not fresh.exists() and out.read_text() == "precious" and (tmp_path / "mine.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".eqn", "in.csv", "mine.csv", "out.csv"]


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
    message = {
        "empty": "empty",
        "header_only": "empty",
        "no_column": "no column 'text'",
        "directory": "directory",
        "missing": "not found",
    }[case]
    with pytest.raises(DataError, match=message) as err:
        annotate_file(str(ckpt), str(path), str(tmp_path / "out.csv"), progress=False)
    assert str(path) in str(err.value)
    assert not (tmp_path / "out.csv").exists()


def test_bad_batch_size_is_refused_not_garbage(ckpt, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("text\nhello\n")
    for value in ("-1", "0", "abc"):
        with pytest.raises(SystemExit, match=f"batch_size='{value}': must be a whole number"):
            main([f"ckpt={ckpt}", f"input={inp}", f"output={tmp_path / 'o.csv'}", f"batch_size={value}"])
    with pytest.raises(ValueError, match="batch_size=-1"):
        load(str(ckpt)).scores(["hello"], batch_size=-1)
    assert not (tmp_path / "o.csv").exists()


def test_input_columns_named_like_outputs_are_never_overwritten(ckpt, tmp_path):
    inp = tmp_path / "in.csv"
    for clash in ("neutral", "emotions"):
        inp.write_text(f"text,{clash}\nhello,mine\n")
        with pytest.raises(DataError, match=rf"in.csv: input column\(s\) \['{clash}'\] would be overwritten"):
            annotate_file(str(ckpt), str(inp), str(tmp_path / "o.csv"), progress=False)
    assert not (tmp_path / "o.csv").exists()


def test_jsonl_non_string_text_is_an_error_and_output_is_valid_json(ckpt, tmp_path):
    import json

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 42}\n')
    with pytest.raises(DataError, match="bad.jsonl, line 2: text 42 in column 'text' is missing or not a string"):
        annotate_file(str(ckpt), str(bad), str(tmp_path / "o.jsonl"), progress=False)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "fine", "note": null}\n{"text": "also fine", "note": 1.5}\n')
    annotate_file(str(ckpt), str(good), str(tmp_path / "o.jsonl"), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]  # strict JSON
    assert rows[0]["note"] is None and rows[1]["note"] == 1.5 and "NaN" not in (tmp_path / "o.jsonl").read_text()


def test_huge_line_is_cut_by_characters_before_tokenising(ckpt):
    from eqn.inference import MAX_CHARS_PER_TOKEN

    model = load(str(ckpt))
    head = "I am so happy and grateful today " * 2000
    huge = head + "x" * 5_000_000
    limit = MAX_CHARS_PER_TOKEN * model.max_length
    assert limit < len(head)
    assert (model.scores([huge]) == model.scores([huge[:limit]])).all()


def big_input(tmp_path, rows=230):
    from eqn.data import sources

    texts = sources.load("goemotions", "/nonexistent").splits["test"].texts[:rows]
    path = tmp_path / "big.csv"
    pd.DataFrame({"text": texts, "row": range(rows)}).to_csv(path, index=False)
    return path


def test_two_shards_give_the_bytes_of_one_process_and_resume_per_chunk(ckpt, tmp_path):
    inp = big_input(tmp_path)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    annotate_file(str(ckpt), str(inp), str(one), chunk_size=50, progress=False)
    first = annotate_file(str(ckpt), str(inp), str(two), chunk_size=50, progress=False, shards=2, shard=0)
    assert not first["complete"] and first["annotated_here"] == 130  # chunks 0, 2, 4 (the last has 30 rows)
    parts = tmp_path / "two.csv.shards"
    assert sorted(p.name for p in parts.glob("chunk-*")) == [f"chunk-{c:08d}.csv" for c in (0, 2, 4)]
    (parts / "chunk-00000002.csv").unlink()  # shard 0 "killed" before this chunk finished
    stamps = {p: p.stat().st_mtime_ns for p in parts.glob("chunk-*")}
    again = annotate_file(str(ckpt), str(inp), str(two), chunk_size=50, progress=False, shards=2, shard=0)
    assert again["annotated_here"] == 50  # only the missing chunk is redone
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    last = annotate_file(str(ckpt), str(inp), str(two), chunk_size=50, progress=False, shards=2, shard=1)
    assert last["complete"] and not parts.exists()
    assert two.read_bytes() == one.read_bytes()


def test_faster_precisions_stay_close_to_fp32(ckpt):
    from eqn.annotate import Annotator

    texts = list(pd.read_csv(big_input(__import__("pathlib").Path(ckpt).parent, 100)).text)
    base = Annotator.from_checkpoint(ckpt).scores(texts)
    for precision in ("bf16", "int8"):
        other = Annotator.from_checkpoint(ckpt, precision=precision).scores(texts)
        assert (other - base).abs().max() < 0.25 and not torch.equal(other, base)
    with pytest.raises(Exception, match="choose one of"):
        Annotator.from_checkpoint(ckpt, precision="fp8")


def test_two_processes_give_the_bytes_of_one(ckpt, tmp_path):
    """chunk_size=110 leaves a last chunk of 10 rows, fewer than one batch per process (once a traceback): it is
    annotated in this process, and the output still equals one process's byte for byte."""
    inp = big_input(tmp_path, 120)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    main([f"ckpt={ckpt}", f"input={inp}", f"output={one}", "batch_size=16", "chunk_size=110", "progress=false"])
    main(
        [
            f"ckpt={ckpt}",
            f"input={inp}",
            f"output={two}",
            "batch_size=16",
            "chunk_size=110",
            "progress=false",
            "trainer.devices=2",
        ]
    )
    assert two.read_bytes() == one.read_bytes()


def test_encode_pads_empty_texts_and_parallel_tokenising_changes_nothing(monkeypatch):
    from eqn.data.tokenize import build_word_encoder

    encoder = build_word_encoder(["a b c", "b c d e"], min_frequency=1)
    texts = ["a b", "", "c d e a b", "zzz"]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    ids, lengths = encoder.encode(texts, max_length=4)
    unk, a = encoder.tokenizer.token_to_id("[UNK]"), encoder.tokenizer.token_to_id("a")
    assert lengths.tolist() == [2, 1, 4, 1]  # cut to max_length; the empty text is one padding token
    assert ids.shape == (4, 4) and ids[1].tolist() == [encoder.pad_id] * 4 and ids[3, 0] == unk
    assert ids[2, 3] == a and (ids[0, 2:] == encoder.pad_id).all()
    again, again_lengths = encoder.encode(texts, max_length=4, parallel=True)
    assert (again == ids).all() and (again_lengths == lengths).all()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"  # restored after the parallel call
