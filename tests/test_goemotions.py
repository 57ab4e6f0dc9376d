import time

import pytest

from eqn.data import sources
from eqn.io import DataError


def test_goemotions_original_files(data_dir):
    data = sources.load("goemotions", data_dir)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [43410, 5426, 5427]
    assert data.multi_label and len(data.label_names) == 28
    assert data.label_names[0] == "admiration" and data.label_names[27] == "neutral"
    assert sum(len(x) > 1 for x in data.splits["train"].labels) == 7102
    assert data.splits["train"].ids[0] == "eebbqej"


def test_goemotions_parses_multi_label_ids(tmp_path):
    folder = tmp_path / "goemotions"
    folder.mkdir()
    (folder / "labels.txt").write_text("\n".join(f"l{i}" for i in range(28)))
    for f in ("train.tsv", "dev.tsv", "test.tsv"):
        (folder / f).write_text("thanks so much\t3,15\tid1\nok\t27\tid2\n")
    data = sources.load("goemotions", tmp_path)
    assert data.splits["train"].labels == [[3, 15], [27]]


def test_missing_goemotions_fails_fast_naming_folder_and_files(tmp_path, monkeypatch):
    # a package installed without its embedded copy, offline: one line naming the folder and the files
    monkeypatch.setattr(sources, "embedded_goemotions", lambda: tmp_path / "not-installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(DataError) as err:
        sources.load("goemotions", tmp_path)
    assert time.perf_counter() - started < 10
    msg = str(err.value)
    assert str(tmp_path / "goemotions") in msg and "train.tsv" in msg and "labels.txt" in msg
