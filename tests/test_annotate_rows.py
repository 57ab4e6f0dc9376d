"""Annotation gives back exactly its input's rows, in order, with the input's columns and values unchanged, for
every input format (CSV, TSV, JSONL, TXT, stdin, headerless), output format, chunk size, shard split and device
count."""

import csv
import io
import json
import sys

import pandas as pd
import pytest

from eqn.annotate import annotate_file, main
from eqn.io import ConfigError, DataError
from tests.conftest import ROOT as ROOT_DIR

TEXTS = [
    "hello, world, again",
    '"quoted" at the start',
    "semi; colon | pipe",
    "ünïcödé ✓ 😀",
    "",
    "plain",
    "ends with a backslash \\",
    "  spaces kept  ",
    "x" * 300,
]
FLOATS = ["48.858370", "0.000123", "1e-7", "", "NaN", "007", "-0.0", "3", "2.50"]


def csv_rows(path, delimiter=",", header=True):
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter, quoting=quoting))
    return rows if header else [["text", *[f"column_{i}" for i in range(1, len(rows[0]))]], *rows]


def make_input(tmp_path, kind):
    """(path or '-', stdin text, header option, the input as [header, *rows] or JSON records)."""
    texts = TEXTS
    if kind in ("csv", "csv_headerless"):
        path = tmp_path / "in.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if kind == "csv":
                writer.writerow(["id", "text", "lat", ""])
                writer.writerows([[f"r{i}", t, FLOATS[i % len(FLOATS)], "x"] for i, t in enumerate(texts)])
            else:
                writer.writerows([[t] for t in texts])
        return path, None, kind == "csv", csv_rows(path, header=kind == "csv")
    if kind in ("tsv", "tsv_headerless"):
        path = tmp_path / "in.tsv"
        lines = (["id\ttext\tlat"] if kind == "tsv" else []) + [
            f"r{i}\t{t}\t{FLOATS[i % len(FLOATS)]}" if kind == "tsv" else f"{t}\tlabel{i}\tid{i}"
            for i, t in enumerate(texts)
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, None, kind == "tsv", csv_rows(path, "\t", header=kind == "tsv")
    if kind == "jsonl":
        path = tmp_path / "in.jsonl"
        records = []
        for i, t in enumerate(texts):
            record = {"text": t, "n": i, "lat": 48.85837 + i, "tags": ["a", i], "flag": i % 2 == 0, "none": None}
            if i % 3 == 1:
                record["source"] = f"s{i}"  # keys differ between rows (and chunks)
            if i % 4 == 2:
                del record["lat"]
            records.append(record)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return path, None, True, records
    lines = [t for t in TEXTS if "\n" not in t]
    if kind == "txt":
        path = tmp_path / "in.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path, None, True, [["text"], *[[line] for line in lines]]
    return "-", "".join(line + "\n" for line in lines), True, [["text"], *[[line] for line in lines]]


def given_part(out, fmt, input_kind, expected):
    """The output's rows cut back to the input's columns, in the input's representation."""
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        if input_kind == "jsonl":
            return [{k: v for k, v in r.items() if k in expected[i]} for i, r in enumerate(rows)], rows
        header = expected[0]
        return [header, *[[r[c] for c in header] for r in rows]], rows
    if fmt == "parquet":
        frame = pd.read_parquet(out)
        header = list(frame.columns[: len(expected[0])])
        return [header, *frame[header].astype(object).where(frame[header].notna(), None).values.tolist()], None
    rows = csv_rows(out, "\t" if fmt == "tsv" else ",")
    if input_kind == "jsonl":
        columns = list(dict.fromkeys(k for r in expected for k in r))
        assert rows[0][: len(columns)] == columns
        decoded = []
        for r, record in zip(rows[1:], expected):
            decoded.append(
                {
                    c: (v if isinstance(record[c], str) else None if record[c] is None and v == "" else json.loads(v))
                    for c, v in zip(columns, r)
                    if c in record
                }
            )
        return decoded, rows
    return [r[: len(expected[0])] for r in rows], rows


@pytest.fixture(scope="module")
def ckpt(trained_run):
    return trained_run / "checkpoints" / "eqn.ckpt"


CASES = [
    (kind, fmt, 1, 1)
    for kind in ("csv", "csv_headerless", "tsv", "tsv_headerless", "jsonl", "txt", "stdin")
    for fmt in ("csv", "tsv", "jsonl")
]
CASES += [
    ("csv", "csv", 4, 2),
    ("jsonl", "jsonl", 2, 3),
    ("tsv", "tsv", 100, 1),
    ("txt", "parquet", 3, 1),
    ("csv", "parquet", 1, 2),
    ("jsonl", "csv", 4, 2),
]


@pytest.mark.parametrize("kind,fmt,chunk_size,shards", CASES, ids=[f"{k}-{f}-c{c}-s{s}" for k, f, c, s in CASES])
def test_rows_order_columns_and_values_come_back_unchanged(ckpt, tmp_path, monkeypatch, kind, fmt, chunk_size, shards):
    source, stdin, header, expected = make_input(tmp_path, kind)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = tmp_path / f"out.{fmt}"
    for shard in range(shards):
        annotate_file(
            str(ckpt),
            str(source),
            str(out),
            chunk_size=chunk_size,
            progress=False,
            header=header,
            shards=shards,
            shard=shard,
        )
    given, raw = given_part(out, fmt, kind, expected)
    assert given == expected  # JSONL: every row keeps exactly its own keys and values
    n = len(expected) if kind == "jsonl" else len(expected) - 1
    if raw is not None:
        assert len(raw) == n + (0 if fmt == "jsonl" else 1)


def test_tsv_output_refuses_a_value_it_cannot_carry(ckpt, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "a\ttab"}) + "\n")
    with pytest.raises(DataError, match="line 2: a value holds a tab"):
        annotate_file(str(ckpt), str(inp), str(tmp_path / "out.tsv"), progress=False)
    assert not (tmp_path / "out.tsv").exists()


def test_headerless_csv_with_several_fields_is_refused_not_cut(ckpt, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("hello, world, again\n")
    with pytest.raises(DataError, match="line 1: has 3 comma-separated fields"):
        annotate_file(str(ckpt), str(inp), str(tmp_path / "o.csv"), progress=False, header=False)
    inp.write_text('"hello, world, again"\n')
    annotate_file(str(ckpt), str(inp), str(tmp_path / "o.csv"), progress=False, header=False)
    assert pd.read_csv(tmp_path / "o.csv")["text"].tolist() == ["hello, world, again"]


def test_prefix_lets_a_gold_labelled_file_be_annotated_as_it_is(ckpt, tmp_path):
    from eqn import load

    labels = load(str(ckpt)).label_names
    inp = tmp_path / "raw.csv"
    pd.DataFrame({"text": ["so happy", "so sad"], **{n: [0, 1] for n in labels}, "emotions": ["a", "b"]}).to_csv(
        inp, index=False
    )
    with pytest.raises(DataError, match="prefix="):
        annotate_file(str(ckpt), str(inp), str(tmp_path / "o.csv"), progress=False)
    annotate_file(str(ckpt), str(inp), str(tmp_path / "o.csv"), progress=False, prefix="eqn_")
    frame = pd.read_csv(tmp_path / "o.csv")
    assert list(frame.columns) == ["text", *labels, "emotions", *[f"eqn_{n}" for n in labels], "eqn_emotions"]
    assert frame[labels].values.tolist() == [[0] * len(labels), [1] * len(labels)]


def test_a_label_named_emotions_is_not_lost(ckpt, tmp_path):
    from eqn import load

    model = load(str(ckpt))
    model.label_names[0] = "emotions"
    with pytest.raises(ConfigError, match="emotions_column="):
        model.annotate(["hi"])
    model.set_columns(emotions_column="decided")
    frame = model.annotate(["hi"])
    assert "emotions" in frame.columns and "decided" in frame.columns and frame.shape[1] == 1 + 28 + 1


def test_output_dash_writes_csv_to_stdout(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("so happy\nso sad, really\n"))
    main([f"ckpt={ckpt}", "input=-", "output=-", "progress=false"])
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert frame["text"].tolist() == ["so happy", "so sad, really"] and "emotions" in frame.columns
    assert not (tmp_path / "-").exists() and not (ROOT_DIR / "-").exists()
