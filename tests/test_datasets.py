"""Every reader against the real files (counts from ../shared/data/SOURCES.md) and small fixtures."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from eqn.data import sources
from eqn.io import DataError
from tests.conftest import needs

FIXTURES = Path(__file__).parent / "fixtures"


def counts(data):
    return {s: len(data.splits[s]) for s in ("train", "val", "test")}


def label_counts(data, split):
    return Counter(data.label_names[ids[0]] for ids in data.splits[split].labels)


def test_emotion6_matches_sources(data_dir):
    needs("emotion6")
    data = sources.load("emotion6", data_dir)
    assert counts(data) == {"train": 16000, "val": 2000, "test": 2000}
    assert data.label_names == ["sadness", "joy", "love", "anger", "fear", "surprise"] and not data.multi_label
    assert label_counts(data, "train") == {
        "sadness": 4666,
        "joy": 5362,
        "love": 1304,
        "anger": 2159,
        "fear": 1937,
        "surprise": 572,
    }
    assert label_counts(data, "test")["surprise"] == 66


def test_tfn3_valid_is_test_and_val_is_a_seeded_tenth_of_train(data_dir):
    needs("tfn3")
    data = sources.load("tfn3", data_dir, seed=1)
    assert data.label_names == ["Bearish", "Bullish", "Neutral"]
    assert len(data.splits["test"]) == 2388
    assert len(data.splits["train"]) + len(data.splits["val"]) == 9543
    assert abs(len(data.splits["val"]) - 954) <= 2
    both = label_counts(data, "train") + label_counts(data, "val")
    assert both == {"Bearish": 1442, "Bullish": 1923, "Neutral": 6178}
    assert any("\n" in t for t in data.splits["train"].texts + data.splits["val"].texts)  # quoted newlines kept
    again = sources.load("tfn3", data_dir, seed=1)
    assert again.splits["val"].texts == data.splits["val"].texts
    assert sources.load("tfn3", data_dir, seed=2).splits["val"].texts != data.splits["val"].texts


def test_tsa3_drops_and_counts_the_empty_text(data_dir):
    needs("tsa3")
    data = sources.load("tsa3", data_dir, drop_empty_text=True)
    assert data.skipped_rows == 1
    assert len(data.splits["train"]) + len(data.splits["val"]) == 27480
    assert len(data.splits["test"]) == 3534
    assert label_counts(data, "test") == {"negative": 1001, "neutral": 1430, "positive": 1103}
    assert "fdb77c3752" not in data.splits["train"].ids + data.splits["val"].ids
    with pytest.raises(DataError, match="empty"):
        sources.load("tsa3", data_dir, drop_empty_text=False)


def health7_dir(tmp_path):
    folder = tmp_path / "health7"
    folder.mkdir()
    shutil.copy(FIXTURES / "health7_combined_data.csv", folder / "Combined Data.csv")
    return tmp_path


def test_health7_original_format_stratified_80_10_10(tmp_path):
    data = sources.load("health7", health7_dir(tmp_path), seed=3)
    assert data.label_names == [
        "Normal",
        "Depression",
        "Suicidal",
        "Anxiety",
        "Stress",
        "Bipolar",
        "Personality disorder",
    ]
    assert data.skipped_rows == 2  # the two empty statements
    assert counts(data) == {"train": 56, "val": 7, "test": 7}
    assert all(n == 1 for n in label_counts(data, "test").values()) and len(label_counts(data, "test")) == 7
    assert "line one\nline two, with a comma" in sum((s.texts for s in data.splits.values()), [])
    assert not data.splits["train"].texts[0].startswith("\ufeff")


def test_health7_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        sources.load("health7", tmp_path)
    assert "Combined Data.csv" in str(err.value) and "kaggle" in str(err.value).lower()


# ----------------------------------------------------------------------------- custom


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_custom_single_label_names_in_three_formats(tmp_path, fmt):
    rows = [(f"text number {i}", ["joy", "anger", "fear"][i % 3]) for i in range(60)]
    if fmt == "jsonl":
        body = "\n".join(json.dumps({"sentence": t, "emotion": e}) for t, e in rows)
    else:
        sep = "," if fmt == "csv" else "\t"
        body = f"sentence{sep}emotion\n" + "\n".join(f"{t}{sep}{e}" for t, e in rows)
    path = write(tmp_path / f"mine.{fmt}", body)
    data = sources.load("custom", tmp_path, path=str(path), text_column="sentence", label_column="emotion", seed=0)
    assert data.label_names == ["anger", "fear", "joy"] and not data.multi_label
    assert sum(counts(data).values()) == 60 and counts(data)["test"] == 6 and counts(data)["val"] == 6


def test_custom_multi_label_with_separator_and_json_lists(tmp_path):
    csv_path = write(
        tmp_path / "ml.csv",
        "text,label\n" + "\n".join(f'row {i},"joy,love"' if i % 2 else f"row {i},sad" for i in range(40)),
    )
    data = sources.load("custom", tmp_path, path=str(csv_path), label_separator=",")
    assert data.multi_label and data.label_names == ["joy", "love", "sad"]
    assert [0, 1] in data.splits["train"].labels + data.splits["test"].labels
    jl = write(
        tmp_path / "ml.jsonl",
        "\n".join(json.dumps({"text": f"r{i}", "label": ["a", "b"] if i % 2 else ["c"]}) for i in range(40)),
    )
    data = sources.load("custom", tmp_path, path=str(jl))
    assert data.multi_label and data.label_names == ["a", "b", "c"]


def test_custom_integer_ids_and_given_splits(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\n" + "\n".join(f"t{i},{i % 3}" for i in range(30)))
    val = write(tmp_path / "val.csv", "text,label\nv1,0\nv2,2\n")
    test = write(tmp_path / "test.csv", "text,label\nx1,1\n")
    data = sources.load("custom", tmp_path, train_path=str(train), val_path=str(val), test_path=str(test))
    assert data.label_names == ["0", "1", "2"]
    assert counts(data) == {"train": 30, "val": 2, "test": 1}
    assert data.splits["val"].labels == [[0], [2]]


def test_custom_label_only_in_test_needs_data_labels(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\na,joy\nb,sad\n")
    test = write(tmp_path / "test.csv", "text,label\nc,fear\n")
    with pytest.raises(DataError) as err:
        sources.load("custom", tmp_path, train_path=str(train), test_path=str(test), val_path=str(train))
    assert "test.csv, line 2" in str(err.value) and "'fear'" in str(err.value) and "data.labels" in str(err.value)
    data = sources.load(
        "custom",
        tmp_path,
        train_path=str(train),
        test_path=str(test),
        val_path=str(train),
        labels=["sad", "joy", "fear"],
    )
    assert data.label_names == ["sad", "joy", "fear"] and data.splits["test"].labels == [[2]]


def test_the_last_datasets_read_are_served_from_memory_until_a_file_changes(tmp_path):
    files = []
    for i in range(sources.KEEP + 1):
        path = tmp_path / f"d{i}.csv"
        path.write_text("text,label\n" + "".join(f"text {j} of {i},{'ab'[j % 2]}\n" for j in range(30)))
        files.append(path)
    first = [sources.load("custom", tmp_path, path=str(p)) for p in files[: sources.KEEP]]
    again = [sources.load("custom", tmp_path, path=str(p)) for p in files[: sources.KEEP]]
    assert all(a.splits["train"] is b.splits["train"] for a, b in zip(first, again))  # not reread
    again[0].splits["train"] = None  # each caller gets its own split table
    assert sources.load("custom", tmp_path, path=str(files[0])).splits["train"] is first[0].splits["train"]
    sources.load("custom", tmp_path, path=str(files[-1]))  # one more: the least recently read one goes
    assert sources.load("custom", tmp_path, path=str(files[1])).splits["train"] is not first[1].splits["train"]
    files[2].write_text(files[2].read_text().replace("text 0 of 2", "TEXT 0 OF 2"))  # same size, new content
    changed = sources.load("custom", tmp_path, path=str(files[2]))
    assert "TEXT 0 OF 2" in changed.splits["train"].texts + changed.splits["val"].texts + changed.splits["test"].texts
