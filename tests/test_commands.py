"""Every eqn command: a bad argument, input or output gets one line and a non-zero exit status, before any work;
a command exits 0 only when it did what was asked."""
import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


class Evil:  # a class inside a checkpoint: never instantiated by eqn
    pass


@pytest.fixture(scope="module")
def files(trained_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("commands")
    f = {"ckpt": trained_run / "checkpoints" / "eqn.ckpt", "run": trained_run, "tmp": tmp}
    f["inp"] = tmp / "in.csv"
    f["inp"].write_text("text\nhello\nworld\n")
    f["afile"] = tmp / "afile"
    f["afile"].write_text("a user's file\n")
    f["usercsv"] = tmp / "user.csv"
    f["usercsv"].write_text("a user's file\n")
    f["corrupt"] = tmp / "corrupt.ckpt"
    f["corrupt"].write_bytes(b"not a zip archive at all")
    f["evil"] = tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": Evil()}}, f["evil"])
    f["mixed"] = tmp / "mixed.jsonl"
    f["mixed"].write_text(json.dumps({"text": "a", "v": 1}) + "\n" + json.dumps({"text": "b", "v": "x"}) + "\n")
    f["ratings"] = ROOT / "tests" / "fixtures" / "ratings.csv"
    f["empty"] = tmp / "empty"
    f["empty"].mkdir()
    f["badscores"] = tmp / "badscores"
    shutil.copytree(trained_run, f["badscores"])
    (f["badscores"] / "stages" / "eqn" / "test_scores.safetensors").write_bytes(b"garbage")
    f["missing"] = tmp / "no_such_file.csv"
    return f


# (module, arguments with {placeholders}, words the one line must hold)
CASES = [
    ("eqn.annotate", ["oops"], "expected key=value"),
    ("eqn.annotate", ["ckpt={ckpt}"], "missing input, output"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "colour=red"], "unknown option 'colour'"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.xlsx"], "unsupported output type '.xlsx'"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "header=ture"],
     "header='ture': must be true or false"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "batch_size=0"], "batch_size='0'"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "shards=2", "shard=5"], "shard=5"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "precision=fp8"], "precision='fp8'"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={missing}", "output={tmp}/o.csv"], "input file not found"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={afile}/o.csv"], "is a file"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={usercsv}"], "exists; pass overwrite=true"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={inp}", "overwrite=true"], "is the input"),
    ("eqn.annotate", ["ckpt={corrupt}", "input={inp}", "output={tmp}/o.csv"], "not a PyTorch checkpoint"),
    ("eqn.annotate", ["ckpt={evil}", "input={inp}", "output={tmp}/o.csv"], "not a trusted eqn checkpoint"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={mixed}", "output={tmp}/o.parquet"], "Parquet needs one type"),
    ("eqn.annotate", ["ckpt=nobody/no-model", "input={inp}", "output={tmp}/o.csv"], "HF_HUB_OFFLINE=1 is set"),
    ("eqn.annotate", ["ckpt={ckpt}", "input=-", "output={tmp}/o.csv", "shards=2"], "needs an input file"),
    ("eqn.export", ["run={run}"], "add dataset=true"),
    ("eqn.export", ["ckpt={ckpt}", "out={afile}"], "exists and is a file"),
    ("eqn.export", ["ckpt={ckpt}", "out={tmp}/m", "private=maybe"], "private='maybe': must be true or false"),
    ("eqn.export", ["ckpt={missing}", "out={tmp}/m"], "checkpoint not found"),
    ("eqn.export", ["run={empty}", "dataset=true"], "no relabeled/ dataset here"),
    ("eqn.validate", ["ckpt={ckpt}", "ratings={ratings}", "resamples=abc"], "resamples='abc'"),
    ("eqn.validate", ["ckpt={ckpt}", "ratings={ratings}", "resamples=-3"], "resamples='-3'"),
    ("eqn.validate", ["ckpt={ckpt}", "ratings={ratings}", "output={tmp}/r.txt"], "name it *.csv"),
    ("eqn.validate", ["ckpt={ckpt}", "ratings={missing}"], "ratings file not found"),
    ("eqn.report", ["{run}", "--resamples", "0"], "must be a whole number of at least 1"),
    ("eqn.report", ["{run}", "--resamples", "-5"], "must be a whole number of at least 1"),
    ("eqn.report", ["{run}", "--out", "{afile}"], "is a file"),
    ("eqn.report", ["{empty}"], "no eqn runs here"),
    ("eqn.report", ["{missing}"], "directory not found"),
    ("eqn.analyze", ["{run}", "{missing}"], "no metrics.json here"),
    ("eqn.analyze", ["{badscores}"], "not a readable eqn tensor file"),
    ("eqn.data", ["download", "nope"], "invalid choice"),
    ("eqn.data", ["download", "emotion6", "--data-dir", "{afile}"], "is a file"),
]
MAINS = {"eqn.data": "eqn.data.download"}


@pytest.mark.parametrize("module,argv,words", CASES, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(CASES)])
def test_bad_arguments_get_one_line_and_a_nonzero_exit(files, capsys, module, argv, words):
    main = importlib.import_module(MAINS.get(module, module)).main
    before = sorted(p.name for p in files["tmp"].iterdir())
    with pytest.raises(SystemExit) as exit_:
        main([a.format(**files) for a in argv])
    code = exit_.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err.strip()
    assert code not in (0, None) and words in message, message
    assert "\n" not in message.strip() and "Traceback" not in message and "weights_only" not in message
    assert sorted(p.name for p in files["tmp"].iterdir()) == before  # nothing written


def test_report_counts_each_seed_once_and_a_failed_job_once(trained_run, tmp_path, capsys):
    from eqn.report import collect, main

    for name in ("a", "b"):
        shutil.copytree(trained_run, tmp_path / name)
    failed = tmp_path / "c" / ".hydra" / "pending"
    failed.mkdir(parents=True)
    shutil.copy(trained_run / "config.yaml", failed / "config.yaml")
    (tmp_path / "d").mkdir()
    shutil.copy(trained_run / "config.yaml", tmp_path / "d" / "config.yaml")
    (tmp_path / "d" / "metrics.json").write_text("{broken")
    frame, problems = collect(tmp_path)
    assert sorted(frame.groupby("stage").size().to_dict().items()) == [("coeqn", 1), ("eqn", 1)]
    assert sum("c: no metrics.json" in p for p in problems) == 1 and sum("again (same configuration" in p
                                                                           for p in problems) == 2
    assert any("d: unreadable metrics.json" in p for p in problems)
    main([str(tmp_path), "--resamples", "20"])
    assert "(n=1)" in capsys.readouterr().out


def test_run_checks_its_output_folder_before_hydra_makes_it(tmp_path):
    from eqn.run import output_dir_problem

    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in output_dir_problem([f"hydra.run.dir={tmp_path / 'afile'}"])
    assert "is a file" in output_dir_problem([f"hydra.sweep.dir={tmp_path / 'afile' / 'sweep'}"])
    assert output_dir_problem([f"hydra.run.dir={tmp_path / 'new' / 'run'}", "seed=1"]) is None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "eqn.run", f"hydra.run.dir={tmp_path / 'afile' / 'run'}"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("eqn: error:")]
    assert proc.returncode != 0 and len(lines) == 1 and "is a file" in lines[0] and "Traceback" not in proc.stderr
    assert (tmp_path / "afile").read_text() == "x"


def test_a_hub_model_offline_and_not_cached_stops_in_one_line(tmp_path):
    from eqn.config import validate
    from eqn.io import ConfigError
    from tests.conftest import compose_config

    cfg = compose_config("model=bert", "model.pretrained=nobody/not-cached-model", tmp_path=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert "nobody/not-cached-model: neither a local folder nor in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1 is set" in message and "huggingface-cli download" in message and "\n" not in message
