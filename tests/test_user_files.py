"""Every command that writes keeps the user's files: files planted with the names it writes, next to and inside
its targets, survive byte for byte; eqn replaces or deletes only what its ledger proves it wrote, and only when
asked."""

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from eqn.annotate import annotate_file
from eqn.export import export
from eqn.io import ConfigError, DataError
from eqn.ownership import owns_file, owns_folder
from eqn.run import run
from tests.conftest import TINY, compose_config


def plant(folder: Path, *names: str) -> dict[Path, str]:
    """User files with the given relative names; returns their digests."""
    planted = {}
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"the user's own {name}\n")
        planted[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return planted


def intact(planted: dict[Path, str]) -> bool:
    return all(p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == h for p, h in planted.items())


def small_cfg(tmp_path, *extra):
    return compose_config(
        *TINY,
        "data.max_train_samples=120",
        "data.max_eval_samples=60",
        "pipeline.analyze=true",
        *extra,
        tmp_path=tmp_path,
    )


@pytest.fixture
def ckpt(trained_run):
    return trained_run / "checkpoints" / "eqn.ckpt"


# ------------------------------------------------------------------------------ eqn.run


RUN_NAMES = (
    "config.yaml",
    "metrics.json",
    "tokenizer.json",
    "relabeled/README.md",
    "export/eqn/config.json",
    "checkpoints/eqn.ckpt",
    "relabeled_train.csv",
    "analysis/correlation.csv",
    "logs/mine.txt",
)


def test_run_refuses_a_folder_that_holds_no_eqn_run_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "mine"
    planted = plant(run_dir, *RUN_NAMES)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    with pytest.raises(ConfigError, match="holds no eqn run") as err:
        run(small_cfg(tmp_path), run_dir=str(run_dir))
    assert "pipeline.reuse_dir=true" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="would be written by eqn but already exist"):
        run(small_cfg(tmp_path, "pipeline.reuse_dir=true"), run_dir=str(run_dir))
    assert intact(planted) and sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_reuse_dir_puts_eqn_files_beside_the_users_and_restart_removes_only_eqns(tmp_path):
    run_dir = tmp_path / "shared"
    planted = plant(run_dir, "notes.txt", "data/train.csv")
    run(small_cfg(tmp_path, "pipeline=coeqn", "pipeline.reuse_dir=true"), run_dir=str(run_dir))
    assert intact(planted) and owns_file(run_dir / "metrics.json") and owns_folder(run_dir / "export" / "coeqn")
    inside = plant(run_dir, "logs/coeqn/mine.txt", "stages/mine.txt", "logs/mine.txt")
    run(small_cfg(tmp_path, "pipeline=coeqn", "pipeline.restart=true", "seed=7"), run_dir=str(run_dir))
    assert intact(planted) and intact(inside)
    assert (run_dir / "metrics.json").exists() and owns_file(run_dir / "checkpoints" / "coeqn.ckpt")
    # a user's file where eqn writes, in an eqn run dir: refused before any work, the file kept
    user_metrics = plant(run_dir, "export/coeqn/mine.md")
    with pytest.raises(ConfigError, match="did not write"):
        run(small_cfg(tmp_path, "pipeline=coeqn", "seed=7"), run_dir=str(run_dir))
    assert intact(user_metrics)


def test_a_changed_eqn_file_is_no_longer_eqns(trained_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)  # content, not inode, proves ownership: a copied run stays eqn's
    assert owns_file(copy / "metrics.json") and owns_folder(copy / "relabeled")
    (copy / "metrics.json").write_text("{}\n")
    assert not owns_file(copy / "metrics.json")
    with pytest.raises(ConfigError, match="metrics.json: eqn writes here"):
        run(small_cfg(tmp_path), run_dir=str(copy))
    assert (copy / "metrics.json").read_text() == "{}\n"


# ------------------------------------------------------------------------------ eqn.export


def test_export_never_replaces_what_it_did_not_write(ckpt, tmp_path, monkeypatch):
    from eqn.export import main

    out = tmp_path / "models"
    planted = plant(out, "mine.txt", "config.json")
    for args in ([], ["overwrite=true"]):
        with pytest.raises(SystemExit, match="models: exists"):
            main([f"ckpt={ckpt}", f"out={out}", *args])
    assert intact(planted)
    monkeypatch.chdir(tmp_path)
    for bad, words in (
        (".", "working directory"),
        (str(Path.home()), "home folder"),
        ("/", "root"),
        (str(ckpt.parent), "holds the input"),
        (str(ckpt.parent.parent), "holds the input"),
    ):
        with pytest.raises(SystemExit, match=words):
            main([f"ckpt={ckpt}", f"out={bad}", "overwrite=true"])
    assert intact(planted) and (ckpt).is_file()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match="afile: exists and is a file"):
        main([f"ckpt={ckpt}", f"out={tmp_path / 'afile'}"])
    # its own folder: replaced only when asked
    folder = export(ckpt, tmp_path / "exported")
    with pytest.raises(ConfigError, match="overwrite=true"):
        export(ckpt, folder)
    export(ckpt, folder, overwrite=True)
    assert owns_folder(folder)
    extra = plant(folder, "notes.md")
    with pytest.raises(ConfigError, match="not written by eqn"):
        export(ckpt, folder, overwrite=True)
    assert intact(extra)


def test_dataset_export_keeps_a_hand_written_card(trained_run, tmp_path, monkeypatch):
    from eqn.export import main

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    monkeypatch.chdir(run_dir / "checkpoints")
    main(["ckpt=eqn.ckpt", "dataset=true"])  # a relative checkpoint names its run (was an IndexError)
    assert owns_folder(run_dir / "hub_dataset")
    main([f"run={run_dir}", "dataset=true", "overwrite=true"])  # eqn's own: replaced when asked
    card = run_dir / "hub_dataset" / "README.md"
    card.write_text("my own card\n")
    with pytest.raises(SystemExit, match="not written by eqn"):
        main([f"run={run_dir}", "dataset=true", "overwrite=true"])
    assert card.read_text() == "my own card\n"


# ------------------------------------------------------------------------------ eqn.validate, eqn.report


def test_validate_never_writes_over_its_input_or_a_users_file(ckpt, tmp_path):
    from eqn.validate import main

    ratings = tmp_path / "rated.csv"
    shutil.copy(Path(__file__).parent / "fixtures" / "ratings.csv", ratings)
    planted = {ratings: hashlib.sha256(ratings.read_bytes()).hexdigest(), **plant(tmp_path, "report.csv")}
    for output, words in ((f"{tmp_path}/./rated.csv", "is the input"), (str(tmp_path / "report.csv"), "exists")):
        with pytest.raises(SystemExit, match=words):
            main([f"ckpt={ckpt}", f"ratings={ratings}", f"output={output}", "overwrite=true", "resamples=20"])
    (tmp_path / "link.csv").symlink_to(ratings)
    with pytest.raises(SystemExit, match="is the input"):
        main([f"ckpt={ckpt}", f"ratings={tmp_path / 'link.csv'}", f"output={ratings}", "overwrite=true"])
    assert intact(planted)


def test_report_keeps_a_users_results_md(trained_run, tmp_path):
    from eqn.report import main

    root = tmp_path / "sweep"
    shutil.copytree(trained_run, root / "0")
    planted = plant(root, "results.md")
    for args in ([], ["--overwrite"]):
        with pytest.raises(SystemExit, match="results.md: exists"):
            main([str(root), *args])
    assert intact(planted)
    (root / "results.md").unlink()
    main([str(root), "--resamples", "20"])
    with pytest.raises(SystemExit, match="overwrite=true"):
        main([str(root), "--resamples", "20"])
    main([f"root={root}", "resamples=20", "overwrite=true"])  # the key=value spelling of the same command
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no eqn runs here"):
        main([str(tmp_path / "empty")])
    assert not any((tmp_path / "empty").iterdir())


# ------------------------------------------------------------------------------ eqn.annotate


def test_annotation_outputs_and_shard_folders_keep_user_files(ckpt, tmp_path):
    inp = tmp_path / "in.csv"
    pd.DataFrame({"text": [f"text number {i}" for i in range(30)]}).to_csv(inp, index=False)
    out = tmp_path / "out.csv"
    planted = plant(tmp_path, "out.csv", "fresh.csv.shards/mine.txt")
    with pytest.raises(ConfigError, match="not written by eqn"):
        annotate_file(str(ckpt), str(inp), str(out), overwrite=True, progress=False)
    with pytest.raises(ConfigError, match="holds no eqn shard job"):
        annotate_file(str(ckpt), str(inp), str(tmp_path / "fresh.csv"), progress=False, shards=2)
    assert intact(planted) and not (tmp_path / "fresh.csv").exists()
    # eqn's own output is replaced when asked; a shard merge removes only its own chunk files
    mine = tmp_path / "mine.csv"
    annotate_file(str(ckpt), str(inp), str(mine), progress=False)
    annotate_file(str(ckpt), str(inp), str(mine), progress=False, overwrite=True)
    parts = tmp_path / "sharded.csv.shards"
    for shard in (0, 1):
        annotate_file(
            str(ckpt), str(inp), str(tmp_path / "sharded.csv"), chunk_size=10, progress=False, shards=2, shard=shard
        )
        if shard == 0:
            user = plant(parts, "keep.txt")
    assert intact(user) and sorted(p.name for p in parts.iterdir()) == [".eqn", "keep.txt"]
    assert (tmp_path / "sharded.csv").read_bytes() == mine.read_bytes()


def test_stale_shards_of_another_job_are_refused(ckpt, trained_run, tmp_path):
    inp = tmp_path / "in.csv"
    pd.DataFrame({"text": [f"text number {i}" for i in range(30)]}).to_csv(inp, index=False)
    out = tmp_path / "out.csv"
    annotate_file(str(ckpt), str(inp), str(out), chunk_size=10, progress=False, shards=2, shard=0)
    other = trained_run / "checkpoints" / "coeqn.ckpt"
    for kwargs, words in (({"ckpt": str(other)}, "model"), ({"chunk_size": 5}, "chunk_size")):
        args = {
            "ckpt": str(ckpt),
            "input": str(inp),
            "output": str(out),
            "chunk_size": 10,
            "progress": False,
            "shards": 2,
            "shard": 1,
            **kwargs,
        }
        with pytest.raises(ConfigError, match=f"another job \\(different {words}"):
            annotate_file(**args)
    inp.write_text(inp.read_text() + "one more\n")
    with pytest.raises(ConfigError, match="different input"):
        annotate_file(str(ckpt), str(inp), str(out), chunk_size=10, progress=False, shards=2, shard=1)
    assert not out.exists()


# ------------------------------------------------------------------------------ eqn.data download


def test_download_verifies_in_a_temporary_folder_and_keeps_existing_files(tmp_path, monkeypatch):
    import datasets

    from eqn import hub
    from eqn.data import download, sources

    def fake(n):
        return datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(n)], "label": [i % 6 for i in range(n)]})

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(train=fake(12), validation=fake(6), test=fake(6))
    )
    monkeypatch.setitem(download.HUB, "emotion6", ("x/y", None, {"train": 12, "val": 6, "test": 6}))
    planted = plant(tmp_path, "emotion6/train.txt", "emotion6/notes.md")
    with pytest.raises(DataError, match="train.txt: exists with other content; nothing was written"):
        download.download("emotion6", tmp_path)
    with pytest.raises(DataError, match="not written by eqn"):
        download.download("emotion6", tmp_path, overwrite=True)
    assert intact(planted) and sorted(p.name for p in (tmp_path / "emotion6").iterdir()) == ["notes.md", "train.txt"]
    (tmp_path / "emotion6" / "train.txt").unlink()
    download.download("emotion6", tmp_path)
    assert intact({k: v for k, v in planted.items() if k.name == "notes.md"})
    assert len(sources.load("emotion6", tmp_path).splits["train"]) == 12
    download.download("emotion6", tmp_path)  # identical files: nothing to replace
    monkeypatch.setitem(download.HUB, "emotion6", ("x/y", None, {"train": 13, "val": 6, "test": 6}))
    (tmp_path / "emotion6" / "val.txt").unlink()
    with pytest.raises(DataError, match="expected 13; nothing was written"):
        download.download("emotion6", tmp_path)
    assert not (tmp_path / "emotion6" / "val.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".emotion6")]  # no staging left behind
