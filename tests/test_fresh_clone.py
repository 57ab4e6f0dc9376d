"""A fresh clone works on its own: GoEmotions ships inside the package; other datasets say how to get them."""

import gzip
import os
import shutil
import subprocess

import pytest

from eqn.data import sources
from eqn.data.download import download
from eqn.io import DataError
from tests.conftest import ROOT


def test_embedded_goemotions_is_used_when_the_data_dir_lacks_it(tmp_path):
    data = sources.load("goemotions", tmp_path)
    assert {s: len(v) for s, v in data.splits.items()} == {"train": 43410, "val": 5426, "test": 5427}
    assert len(data.label_names) == 28 and data.label_names[27] == "neutral"
    assert all(str(f).startswith(str(sources.embedded_goemotions())) for f in data.files)
    assert (sources.embedded_goemotions() / "LICENSE.md").read_text().count("CC BY 4.0") >= 1


def test_data_dir_files_win_over_the_embedded_copy(tmp_path):
    folder = tmp_path / "goemotions"
    folder.mkdir()
    shutil.copy(sources.embedded_goemotions() / "labels.txt", folder)
    for name in ("train", "dev", "test"):
        (folder / f"{name}.tsv").write_text("".join(f"text {i}\t{i % 28}\tid{i}\n" for i in range(30)))
    data = sources.load("goemotions", tmp_path)
    assert len(data.splits["train"]) == 30


def test_a_damaged_embedded_file_is_refused(tmp_path):
    copy = tmp_path / "goemotions"
    shutil.copytree(sources.embedded_goemotions(), copy)
    text = gzip.decompress((copy / "dev.tsv.gz").read_bytes())
    (copy / "dev.tsv.gz").write_bytes(gzip.compress(text[:-200]))
    with pytest.raises(DataError, match="dev.tsv.gz: the embedded GoEmotions file is damaged"):
        sources.verify_embedded(copy)


def test_missing_dataset_offline_names_folder_files_flag_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        sources.load("emotion6", tmp_path)
    text = str(err.value)
    for words in (str(tmp_path / "emotion6"), "train.txt", "HF_HUB_OFFLINE=1 is set", "python -m eqn.data download"):
        assert words in text
    with pytest.raises(DataError, match="cannot download dair-ai/emotion: HF_HUB_OFFLINE=1 is set"):
        download("emotion6", tmp_path)
    with pytest.raises(DataError, match="kaggle datasets download"):
        download("health7", tmp_path)


def test_make_run_default_command_on_the_embedded_data(tmp_path):
    env = {**os.environ, "EQN_DATA_DIR": str(tmp_path / "no-data-here"), "PYTHONUNBUFFERED": "1"}
    args = (
        f"data.max_train_samples=300 data.max_eval_samples=100 trainer.max_epochs=1 logger=none "
        f"trainer.enable_progress_bar=false paths.cache_dir={tmp_path / 'cache'} hydra.run.dir={tmp_path / 'run'}"
    )
    done = subprocess.run(
        ["make", "-s", "run", f"ARGS={args}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("coeqn", "eqn"):
        assert f"{stage} test: f1_macro=" in done.stdout
    assert f"outputs: {tmp_path / 'run'}" in done.stdout
    assert (tmp_path / "run" / "relabeled_train.csv").exists()
