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
    f["bigints"] = tmp / "bigints.jsonl"
    f["bigints"].write_text(json.dumps({"text": "a", "n": 2**70}) + "\n")
    f["ratingsobj"] = tmp / "ratings.jsonl"
    f["ratingsobj"].write_text(json.dumps({"text": "a", "emotion": "joy", "rating": 1}) + "\n[1, 2]\n")
    f["listmetrics"] = tmp / "listmetrics"
    shutil.copytree(trained_run, f["listmetrics"])
    (f["listmetrics"] / "metrics.json").write_text("[1, 2]\n")
    f["loop"] = tmp / "loop.csv"
    os.symlink(f["loop"], f["loop"])
    f["ckptloop"] = tmp / "loop.ckpt"
    os.symlink(f["ckptloop"], f["ckptloop"])
    f["ragged"] = tmp / "ragged.csv"
    f["ragged"].write_text("text,id\na,1\nb\nc,3\n")
    f["lateutf"] = tmp / "late.csv"
    f["lateutf"].write_bytes(b"text\n" + b"x" * 300000 + b"\n\xff\n")
    return f


# (module, arguments with {placeholders}, words the one line must hold)
CASES = [
    ("eqn.annotate", ["oops"], "expected key=value"),
    ("eqn.annotate", ["ckpt={ckpt}"], "missing input, output"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "colour=red"], "unknown option 'colour'"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.xlsx"], "unsupported output type '.xlsx'"),
    (
        "eqn.annotate",
        ["ckpt={ckpt}", "input={inp}", "output={tmp}/o.csv", "header=ture"],
        "header='ture': must be true or false",
    ),
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
    ("eqn.annotate", ["ckpt={ckpt}", "input={bigints}", "output={tmp}/o.parquet"], "o.parquet: Parquet needs one"),
    ("eqn.annotate", ["ckpt={ckpt}", "input={loop}", "output={tmp}/o.csv"], "link that leads nowhere"),
    ("eqn.annotate", ["ckpt={ckptloop}", "input={inp}", "output={tmp}/o.csv"], "link that leads nowhere"),
    (
        "eqn.annotate",
        ["ckpt=runs/nothing/eqn.ckpt", "input={inp}", "output={tmp}/o.csv"],
        "checkpoint or model folder not found",
    ),
    ("eqn.annotate", ["ckpt={ckpt}", "input={ragged}", "output={tmp}/o.csv"], "line 3: row has 1 field, the header 2"),
    (
        "eqn.annotate",
        ["ckpt={ckpt}", "input={lateutf}", "output={tmp}/o.csv"],
        "line 3: is not UTF-8 text (invalid start byte: byte at offset 300006)",
    ),
    ("eqn.validate", ["ckpt={ckpt}", "ratings={ratingsobj}"], "ratings.jsonl, line 2: a JSONL row must be an object"),
    ("eqn.analyze", ["{listmetrics}"], "is a JSON list, not eqn's metrics"),
    ("eqn.export", ["ckpt={ckpt}", "out={tmp}/pushed", "push_to_hub=me/model"], "nothing was written"),
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


@pytest.mark.parametrize(
    "module", ["eqn.annotate", "eqn.export", "eqn.validate", "eqn.report", "eqn.analyze", "eqn.data"]
)
def test_every_command_takes_one_style_and_prints_its_help(module, capsys):
    """One command-line style: --help prints the command's own text and exits 0; `--key value` means key=value."""
    from eqn.cli import parse

    main = importlib.import_module(MAINS.get(module, module)).main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and f"python -m {module}" in capsys.readouterr().out
    args = parse(
        ["a", "--out=x-y", "--overwrite", "--resamples", "3", "b", "c"],
        "p",
        "u",
        known=("root", "out", "overwrite", "resamples", "more"),
        ints={"resamples": 1},
        bools=("overwrite",),
        positional=("root", "more*"),
    )
    assert args == {"root": "a", "out": "x-y", "overwrite": True, "resamples": 3, "more": ["b", "c"]}


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
    assert (
        sum("c: no metrics.json" in p for p in problems) == 1
        and sum("again (same configuration" in p for p in problems) == 2
    )
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
    proc = subprocess.run(
        [sys.executable, "-m", "eqn.run", f"hydra.run.dir={tmp_path / 'afile' / 'run'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
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


def test_non_utf8_stdin_is_one_line(files, monkeypatch, capsys):
    import io

    from eqn.annotate import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"fine\n\xff\xfe bad\n"), encoding="utf-8"))
    with pytest.raises(SystemExit) as exit_:
        main([f"ckpt={files['ckpt']}", "input=-", f"output={files['tmp'] / 'stdin.csv'}"])
    assert "stdin: is not UTF-8 text" in str(exit_.value.code) and "\n" not in str(exit_.value.code)
    assert not (files["tmp"] / "stdin.csv").exists()


def test_a_shard_after_the_merge_says_already_merged_with_a_stale_temporary(files, tmp_path, capsys):
    import socket

    from eqn.annotate import main
    from eqn.ownership import ledger_root

    inp = tmp_path / "in.csv"
    inp.write_text("text\n" + "".join(f"t {i}\n" for i in range(20)))
    args = [
        f"ckpt={files['ckpt']}",
        f"input={inp}",
        f"output={tmp_path / 'o.csv'}",
        "chunk_size=5",
        "shards=2",
        "progress=false",
    ]
    for shard in (0, 1):
        main([*args, f"shard={shard}"])
    parts = tmp_path / "o.csv.shards"
    parts.mkdir()
    stale = parts / ".eqn-tmp-99999-0badf00d-chunk-00000001.csv.tmp"  # what a killed late shard left
    stale.write_text("half a chunk")
    with open(ledger_root(stale) / ".eqn" / "owned.jsonl", "a") as ledger:  # noted by a process now gone
        ledger.write(
            json.dumps(
                {
                    "path": stale.relative_to(ledger_root(stale)).as_posix(),
                    "temp": True,
                    "pid": 2**22 + 7,
                    "host": socket.gethostname(),
                    "time": 0,
                }
            )
            + "\n"
        )
    main([*args, "shard=1"])  # exits 0
    assert "already merged" in capsys.readouterr().err and not parts.exists()


def test_a_shared_folder_whose_ledger_eqn_cannot_write(files, tmp_path, monkeypatch):
    """The nearest ledger belongs to someone else: eqn records its output in a ledger of the output's own folder,
    decided before any work, and a rerun with overwrite=true knows the file as eqn's."""
    import eqn.ownership as ownership
    from eqn.annotate import annotate_file

    shared = tmp_path / "shared"
    (shared / ".eqn").mkdir(parents=True)
    (shared / ".eqn" / "owned.jsonl").write_text("")
    theirs = shared / ".eqn" / "owned.jsonl"
    real = ownership._can_append
    monkeypatch.setattr(ownership, "_can_append", lambda root: root != shared and real(root))
    out = shared / "mine" / "out.csv"
    out.parent.mkdir()
    annotate_file(str(files["ckpt"]), str(files["inp"]), str(out), progress=False)
    assert theirs.read_text() == "" and ownership.owns_file(out)
    annotate_file(str(files["ckpt"]), str(files["inp"]), str(out), progress=False, overwrite=True)
    from eqn.io import ConfigError

    with pytest.raises(ConfigError, match="owned.jsonl is not writable"):  # no folder of its own to record in
        annotate_file(str(files["ckpt"]), str(files["inp"]), str(shared / "top.csv"), progress=False)
    assert not (shared / "top.csv").exists()


def test_sigint_during_annotation_is_one_line_and_130(files, tmp_path):
    import signal
    import time

    inp = tmp_path / "many.txt"
    inp.write_text("".join(f"text number {i} is here\n" for i in range(200000)))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eqn.annotate",
            f"ckpt={files['ckpt']}",
            f"input={inp}",
            f"output={tmp_path / 'o.csv'}",
            "progress=false",
            "chunk_size=1000",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob(".eqn-tmp-*")) and time.time() < deadline:  # the output is being written
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().count("\n") == 0 and "interrupted" in err, err[-3000:]
    assert not (tmp_path / "o.csv").exists() and not list(tmp_path.glob(".eqn-tmp-*"))


def test_hydra_override_mistakes_are_one_line():
    from eqn.run import override_problem

    assert "could not be converted to Integer" in override_problem(["trainer.max_epochs=abc"])
    assert "Key 'max_epoch' not in 'TrainerConfig'" in override_problem(["trainer.max_epoch=3"])
    assert override_problem(["trainer.max_epochs=3", "hydra.run.dir=/tmp/x"]) is None
    done = subprocess.run(
        [sys.executable, "-m", "eqn.run", "trainer.max_epoch=3"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )  # the command itself: one line, exit 1
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and "max_epoch" in done.stderr, done.stderr
