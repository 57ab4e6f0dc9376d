"""The ownership rules hold at the moment of writing, and every kill -9 resumes.

- A file or folder that appears at an output path while eqn works (a user's own, or a second eqn job's) is never
  replaced; an eqn output that changes meanwhile is never replaced either.
- A folder is an eqn run dir only when it holds that run's own record; a restart removes only that run's files and
  refuses, before any work, edited eqn files and a teacher it would delete.
- Folder replacement is atomic: every entry is checked before anything moves (an empty user sub-folder, a link).
- A refused run writes nothing into the folder (no run.log, no .hydra/).
- kill -9 while a temporary file or folder exists, then the same command: the result of an uninterrupted run.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eqn.annotate import Annotator, annotate_file
from eqn.export import export
from eqn.io import ConfigError, write_json
from eqn.ownership import TEMP, owns_file, owns_folder
from eqn.run import run
from tests.conftest import ROOT, SMALL_TEXTCNN, TINY, compose_config


def digests(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"{TEMP}*")]


@pytest.fixture
def ckpt(trained_run):
    return trained_run / "checkpoints" / "eqn.ckpt"


@pytest.fixture
def texts(tmp_path):
    inp = tmp_path / "in.csv"
    pd.DataFrame({"text": [f"text number {i}" for i in range(30)]}).to_csv(inp, index=False)
    return inp


def tiny(tmp_path, *extra):
    return compose_config(
        *TINY,
        *SMALL_TEXTCNN,
        "pipeline.analyze=true",
        *extra,
        tmp_path=tmp_path,
    )


# ------------------------------------------------------------------------------ check-then-act


def during_annotation(monkeypatch, action):
    """Run `action` once, while the annotation is under way (after every check, before the output is put)."""
    original = Annotator.annotate_frame
    done = []

    def annotate_frame(self, *args, **kwargs):
        if not done:
            done.append(True)
            action()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Annotator, "annotate_frame", annotate_frame)


def test_a_file_that_appears_during_annotation_is_never_replaced(ckpt, texts, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    during_annotation(monkeypatch, lambda: out.write_text("the user's own\n"))
    with pytest.raises(ConfigError, match="appeared while eqn was writing it"):
        annotate_file(str(ckpt), str(texts), str(out), progress=False)
    assert out.read_text() == "the user's own\n" and not temps(tmp_path)


def test_a_second_job_on_the_same_output_is_never_replaced(ckpt, texts, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    other = tmp_path / "other.csv"
    pd.DataFrame({"text": ["something else entirely"]}).to_csv(other, index=False)
    # the second job (another input) finishes first, while the first is still annotating
    during_annotation(monkeypatch, lambda: annotate_file(str(ckpt), str(other), str(out), progress=False))
    with pytest.raises(ConfigError, match="appeared while eqn was writing it"):
        annotate_file(str(ckpt), str(texts), str(out), progress=False)
    assert len(pd.read_csv(out)) == 1 and owns_file(out)  # the second job's output, still eqn's


def test_overwrite_replaces_only_the_file_that_was_there_when_it_began(ckpt, texts, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    annotate_file(str(ckpt), str(texts), str(out), progress=False)
    during_annotation(monkeypatch, lambda: out.write_text("edited by the user meanwhile\n"))
    with pytest.raises(ConfigError, match="changed while eqn was writing it"):
        annotate_file(str(ckpt), str(texts), str(out), progress=False, overwrite=True)
    assert out.read_text() == "edited by the user meanwhile\n"


def test_every_writer_refuses_a_file_that_appeared(tmp_path):
    """write_json/write_text (run files, reports, validate's output) go through the same check."""
    from eqn.io import atomic_path

    target = tmp_path / "results.md"
    with pytest.raises(ConfigError, match="appeared"):
        with atomic_path(target) as tmp:
            tmp.write_text("eqn's\n")
            target.write_text("the user's\n")
    assert target.read_text() == "the user's\n" and not temps(tmp_path)
    write_json(tmp_path / "m.json", {"a": 1})
    write_json(tmp_path / "m.json", {"a": 2})  # eqn's own, unchanged since: replaced
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}


def test_an_export_folder_that_appears_during_export_is_kept(ckpt, tmp_path, monkeypatch):
    import eqn.model_folder as exporter

    out = tmp_path / "model"
    original = exporter.export_eqn

    def export_eqn(module, folder):
        original(module, folder)
        (out / "sub").mkdir(parents=True)
        (out / "sub" / "mine.txt").write_text("mine\n")

    monkeypatch.setattr(exporter, "export_eqn", export_eqn)
    with pytest.raises(ConfigError, match="(appeared while eqn was writing it|eqn did not write)"):
        export(ckpt, out)
    assert (out / "sub" / "mine.txt").read_text() == "mine\n" and not temps(tmp_path)


# ------------------------------------------------------------------------------ atomic folder replacement


@pytest.mark.parametrize("intruder", ["empty folder", "link to a folder", "link to a file"])
def test_folder_replacement_checks_every_entry_before_touching_anything(ckpt, tmp_path, intruder):
    folder = export(ckpt, tmp_path / "model")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    if intruder == "empty folder":
        (folder / "empty").mkdir()
    elif intruder == "link to a folder":
        (folder / "linked").symlink_to(target)
    else:
        (folder / "linked.txt").symlink_to(target / "keep.txt")
    before = digests(folder)
    with pytest.raises(ConfigError, match="(did not write|not written by eqn)"):
        export(ckpt, folder, overwrite=True)
    assert digests(folder) == before and (target / "keep.txt").read_text() == "keep\n"
    assert not temps(tmp_path) and sorted(p.name for p in tmp_path.iterdir() if p.name != ".eqn") == [
        "elsewhere",
        "model",
    ]


def test_folder_replacement_swaps_by_rename(ckpt, tmp_path):
    folder = export(ckpt, tmp_path / "model")
    (folder / "config.json").stat()
    export(ckpt, folder, overwrite=True)
    assert owns_folder(folder) and not temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".eqn") == ["model"]


# ------------------------------------------------------------------------------ what is a run dir


def test_a_folder_eqn_annotated_into_is_not_a_run_dir(ckpt, texts, tmp_path):
    folder = tmp_path / "work"
    annotate_file(str(ckpt), str(texts), str(folder / "analysis" / "annotated.csv"), progress=False)
    annotate_file(str(ckpt), str(texts), str(folder / "annotated.csv"), progress=False)
    before = digests(folder)
    with pytest.raises(ConfigError, match="holds no eqn run"):
        run(tiny(tmp_path, "pipeline=coeqn", "pipeline.restart=true"), run_dir=str(folder))
    assert digests(folder) == before


def test_the_working_directory_and_the_data_folder_are_never_run_dirs(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"text": [f"t {i}" for i in range(40)], "label": ["a", "b"] * 20}).to_csv(data / "d.csv", index=False)
    custom = ["data=custom", f"data.path={data / 'd.csv'}", "pipeline.reuse_dir=true"]
    with pytest.raises(ConfigError, match="holds the input"):
        run(tiny(tmp_path, *custom), run_dir=str(data))
    monkeypatch.chdir(tmp_path / "data")
    with pytest.raises(ConfigError, match="working directory"):
        run(tiny(tmp_path, "pipeline.reuse_dir=true"), run_dir=".")
    assert sorted(p.name for p in data.iterdir()) == ["d.csv"]


def test_restart_refuses_edited_logs_and_keeps_them(tmp_path):
    run_dir = tmp_path / "run"
    run(tiny(tmp_path, "pipeline=coeqn", "logger=csv"), run_dir=str(run_dir))
    logs = run_dir / "logs" / "coeqn"
    for name in ("metrics.csv", "hparams.yaml"):
        edited = logs / name
        original = edited.read_bytes()
        edited.write_text("my notes\n")
        with pytest.raises(ConfigError, match=f"{name}: eqn writes here but found"):
            run(tiny(tmp_path, "pipeline=coeqn", "logger=csv", "pipeline.restart=true"), run_dir=str(run_dir))
        assert edited.read_text() == "my notes\n"
        edited.write_bytes(original)
    run(tiny(tmp_path, "pipeline=coeqn", "logger=csv", "pipeline.restart=true"), run_dir=str(run_dir))


def test_restart_refuses_a_teacher_it_would_delete(tmp_path):
    run_dir = tmp_path / "run"
    run(tiny(tmp_path, "pipeline=baseline"), run_dir=str(run_dir))
    teacher = run_dir / "checkpoints" / "baseline.ckpt"
    before = teacher.read_bytes()
    with pytest.raises(ConfigError, match="pipeline.restart=true would clear"):
        run(
            tiny(
                tmp_path,
                "pipeline=eqn",
                "pipeline.restart=true",
                "regression=teacher",
                f"regression.teachers=[{teacher}]",
            ),
            run_dir=str(run_dir),
        )
    assert teacher.read_bytes() == before


def test_restart_refuses_a_users_checkpoint_where_lightning_resumes(tmp_path):
    run_dir = tmp_path / "run"
    run(tiny(tmp_path, "pipeline=coeqn"), run_dir=str(run_dir))
    planted = run_dir / "stages" / "coeqn" / "last.ckpt"
    planted.write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match="last.ckpt: eqn writes here"):
        run(tiny(tmp_path, "pipeline=coeqn", "pipeline.restart=true"), run_dir=str(run_dir))
    assert planted.read_text() == "not a checkpoint\n"


def test_restart_removes_only_this_runs_files(ckpt, texts, tmp_path):
    run_dir = tmp_path / "run"
    run(tiny(tmp_path, "pipeline=coeqn"), run_dir=str(run_dir))
    mine = run_dir / "analysis" / "annotated.csv"  # eqn's (annotate), but not this run's
    annotate_file(str(ckpt), str(texts), str(mine), progress=False)
    before = mine.read_bytes()
    run(tiny(tmp_path, "pipeline=coeqn", "pipeline.restart=true"), run_dir=str(run_dir))
    assert mine.read_bytes() == before and owns_file(mine)


def eqn_run(*args, env=None, cwd=ROOT):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "eqn.run",
            *TINY,
            *SMALL_TEXTCNN[2:],
            "pipeline.analyze=true",
            "trainer.enable_progress_bar=false",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_a_refused_run_writes_nothing_into_the_folder(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "run.log").write_text("my own log\n")
    (user / "notes.txt").write_text("notes\n")
    before = digests(user)
    # with reuse_dir=true the folder would be accepted but for the user's run.log, which eqn would append to
    refused = eqn_run(f"hydra.run.dir={user}", f"paths.cache_dir={tmp_path / 'cache'}", "pipeline.reuse_dir=true")
    assert refused.returncode != 0 and "run.log would be written by eqn" in refused.stderr, refused.stderr[-2000:]
    assert digests(user) == before and sorted(p.name for p in user.iterdir()) == ["notes.txt", "run.log"]


# ------------------------------------------------------------------------------ kill -9 resumes


def killed(module: str, argv: list[str], point: str, cwd=ROOT) -> None:
    """`python -m module argv`, killed with SIGKILL (no handler, no cleanup) at the fault point `point`."""
    done = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EQN_FAULT_AT": point, "EQN_FAULT_SIGNAL": "9"},
    )
    assert done.returncode == -9, (point, done.stderr[-2000:])


def test_kill_during_the_pipelines_temporary_folders_then_resume(tmp_path):
    """kill -9 while export/ and relabeled/ temporaries hold files: each rerun resumes; the result equals an
    uninterrupted run's, and no temporary is left."""
    args = [
        "pipeline=eqn",
        *TINY,
        *SMALL_TEXTCNN[2:],
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    run_dir = tmp_path / "run"
    killed("eqn.run", [*args, f"hydra.run.dir={run_dir}"], "folder:coeqn")
    assert temps(run_dir / "export")  # the export's temporary folder was left behind
    killed("eqn.run", [*args, f"hydra.run.dir={run_dir}"], "folder:relabeled")
    assert temps(run_dir)
    overrides = [a for a in args if not a.startswith(("trainer.enable", "paths.cache"))]
    run(compose_config(*overrides, tmp_path=tmp_path), run_dir=str(run_dir))
    reference = tmp_path / "reference"
    run(compose_config(*overrides, tmp_path=tmp_path), run_dir=str(reference))
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
    assert strip(json.loads((run_dir / "metrics.json").read_text())) == strip(
        json.loads((reference / "metrics.json").read_text())
    )
    assert (run_dir / "relabeled_train.csv").read_bytes() == (reference / "relabeled_train.csv").read_bytes()
    assert not temps(run_dir) and owns_folder(run_dir / "relabeled") and owns_folder(run_dir / "export" / "eqn")


def test_kill_during_annotation_shards_export_and_dataset_then_rerun(ckpt, trained_run, texts, tmp_path):
    from eqn.annotate import main as annotate
    from eqn.export import main as exporter

    single = tmp_path / "single.csv"
    annotate([f"ckpt={ckpt}", f"input={texts}", "progress=false", f"output={single}"])
    sharded = tmp_path / "sharded.csv"
    args = [f"ckpt={ckpt}", f"input={texts}", "progress=false", f"output={sharded}", "chunk_size=10", "shards=2"]
    annotate([*args, "shard=0"])
    killed("eqn.annotate", [*args, "shard=1"], "write:sharded.csv")  # the output's temporary (chunks: the same path)
    assert temps(tmp_path) and not sharded.exists()
    annotate([*args, "shard=1"])
    assert sharded.read_bytes() == single.read_bytes() and not temps(tmp_path)
    model = tmp_path / "model"
    killed("eqn.export", [f"ckpt={ckpt}", f"out={model}"], "folder:model")
    assert temps(tmp_path)
    exporter([f"ckpt={ckpt}", f"out={model}"])
    assert owns_folder(model) and not temps(tmp_path)
    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run, run_dir)
    killed("eqn.export", [f"run={run_dir}", "dataset=true"], "folder:hub_dataset")
    assert temps(run_dir)
    exporter([f"run={run_dir}", "dataset=true"])
    assert owns_folder(run_dir / "hub_dataset") and not temps(run_dir)


def test_restart_refuses_a_user_folder_in_relabeled_before_any_training(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run(tiny(tmp_path, "pipeline=eqn", "pipeline.analyze=false"), run_dir=str(run_dir))
    (run_dir / "relabeled" / "mine").mkdir()  # an empty folder of the user's inside eqn's dataset folder
    import eqn.pipeline

    monkeypatch.setattr(eqn.pipeline, "fit", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ConfigError, match="relabeled/mine: eqn writes here"):
        run(tiny(tmp_path, "pipeline=eqn", "pipeline.analyze=false", "pipeline.restart=true"), run_dir=str(run_dir))
    assert (run_dir / "relabeled" / "mine").is_dir() and owns_file(run_dir / "relabeled" / "README.md")
