"""Bad data and bad configs: an error naming the file, the line and the problem, before any training."""

import json

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from eqn.data import sources
from eqn.io import DataError
from eqn.run import run
from tests.conftest import compose_config, needs

GOOD = "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(20))


def goemotions_dir(tmp_path, train_lines):
    folder = tmp_path / "goemotions"
    folder.mkdir()
    (folder / "labels.txt").write_text("\n".join(f"l{i}" for i in range(28)))
    (folder / "train.tsv").write_bytes(train_lines)
    for f in ("dev.tsv", "test.tsv"):
        (folder / f).write_text("fine\t1\tx1\n")
    return tmp_path


# (name, file name, content, extra reader options, expected line, expected words in the message)
CASES = [
    ("missing_column", "d.csv", "text,emotion\nhello,a\n", {}, 1, "missing column(s) ['label']"),
    ("empty_file", "d.csv", "", {}, None, "empty"),
    ("header_only", "d.csv", "text,label\n", {}, None, "no usable rows"),
    ("label_not_in_set", "d.csv", GOOD + "oops,c\n", {"labels": ["a", "b"]}, 22, "'c' is not in the label set"),
    ("label_id_out_of_range", "d.csv", GOOD + "oops,7\n", {"labels": ["a", "b"]}, 22, "label id 7 is out of range"),
    ("empty_text", "d.csv", GOOD + ",a\n", {}, 22, "text is empty"),
    ("whitespace_text", "d.csv", GOOD + '"   ",a\n', {}, 22, "text is empty or whitespace only"),
    ("nan_text", "d.jsonl", '{"text": "ok", "label": "a"}\n{"text": null, "label": "b"}\n', {}, 2, "text is missing"),
    ("number_text", "d.jsonl", '{"text": "ok", "label": "a"}\n{"text": 3.5, "label": "b"}\n', {}, 2, "not a string"),
    ("non_utf8", "d.csv", GOOD.encode() + b"caf\xe9,a\n", {}, 22, "not valid UTF-8"),
    ("ragged_row", "d.csv", GOOD + "one,a,extra\n", {}, 22, "ragged row: has 3 fields, the header has 2"),
    ("jsonl_not_json", "d.jsonl", '{"text": "ok", "label": "a"}\n{"text": "broken", \n', {}, 2, "not valid JSON"),
    ("jsonl_not_object", "d.jsonl", '{"text": "ok", "label": "a"}\n["text", "a"]\n', {}, 2, "must be a JSON object"),
    ("duplicate_id", "d.csv", "id,text,label\n1,a,x\n2,b,y\n1,c,x\n", {"id_column": "id"}, 4, "duplicate id '1'"),
    ("missing_label", "d.csv", GOOD + "no label,\n", {}, 22, "missing label"),
    ("unsupported_type", "d.xlsx", "whatever", {}, None, "unsupported file type"),
    ("missing_file", None, None, {}, None, "file not found"),
    ("directory", "adir", "DIR", {}, None, "is a directory"),
]


@pytest.mark.parametrize("name,fname,content,options,line,words", CASES, ids=[c[0] for c in CASES])
def test_bad_custom_file(tmp_path, name, fname, content, options, line, words):
    path = tmp_path / (fname or "nothing.csv")
    if content == "DIR":
        path.mkdir()
        path = path.with_suffix(".csv")
        path.mkdir()
    elif content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        sources.load("custom", tmp_path, path=str(path), **options)
    message = str(err.value)
    assert str(path) in message and words in message
    if line is not None:
        assert f"line {line}:" in message


def test_skip_policy_drops_and_counts_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(GOOD + ",a\nx,a,extra\n   ,b\nfine,a\n")
    data = sources.load("custom", tmp_path, path=str(path), on_bad_rows="skip")
    assert data.skipped_rows == 3
    assert sum(len(s) for s in data.splits.values()) == 21


@pytest.mark.parametrize(
    "line,words",
    [
        (b"text only\n", "expected 3 tab-separated fields"),
        (b"hi\t30\tid9\n", "label id 30 is out of range 0..27"),
        (b"hi\tjoy\tid9\n", "'joy' is not in the label set"),
    ],
)
def test_bad_goemotions_rows(tmp_path, line, words):
    root = goemotions_dir(tmp_path, b"good\t1\tid1\n" + line)
    with pytest.raises(DataError) as err:
        sources.load("goemotions", root)
    assert "train.tsv, line 2" in str(err.value) and words in str(err.value)


def test_bad_emotion6_row(tmp_path):
    folder = tmp_path / "emotion6"
    folder.mkdir()
    for f in ("train.txt", "val.txt", "test.txt"):
        (folder / f).write_text("i feel good;joy\nno separator here\n")
    with pytest.raises(DataError, match=r"train.txt, line 2: expected 'text;label'"):
        sources.load("emotion6", tmp_path)


def test_duplicate_goemotions_ids(tmp_path):
    root = goemotions_dir(tmp_path, b"a\t1\tsame\nb\t2\tsame\n")
    with pytest.raises(DataError, match="line 2: duplicate id 'same'"):
        sources.load("goemotions", root)


# ------------------------------------------------------------------------------------ configs


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("data=nonsense")
    assert "goemotions" in str(err.value.__cause__ or err.value) or "Available options" in str(err.value)


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("model=gpt9")
    text = str(err.value) + str(err.value.__cause__)
    assert "textcnn" in text and "minilm" in text


@pytest.mark.parametrize("override", ["data.max_train_sample=5", "trainer.max_epoch=3", "pipeline.thresold=1"])
def test_misspelt_key_fails_at_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_config(override)


def test_wrong_type_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config("trainer.max_epochs=three")


@pytest.mark.parametrize(
    "override,words",
    [
        ("pipeline.name=triple", "'triple', expected one of [eqn, coeqn, baseline]"),
        ("data.on_bad_rows=ignore", "'ignore', expected one of [error, skip]"),
        ("pipeline.monitor=val/bogus", "'val/bogus', expected one of [val/loss, val/f1_macro]"),
        ("pipeline.budget=double", "'double', expected one of [single, matched]"),
        ("pipeline.refit_from=teacher", "'teacher', expected one of [fresh, coeqn]"),
        ("model.head_init=zeros", "'zeros', expected one of [prior, default]"),
        ("regression.loss=hinge", "'hinge', expected one of [mse, bce, ce]"),
        ("regression.schedule=cosine", "'cosine', expected one of [linear, constant]"),
    ],
)
def test_a_choice_outside_its_values_fails_at_composition(override, words):
    """The choice settings are Enum-typed in the schema: OmegaConf refuses another value, naming the key."""
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_config(override)
    text = str(err.value) + str(getattr(err.value, "__cause__", "") or "")
    assert words in text and override.split("=")[0] in text


def test_a_choice_is_its_string_everywhere(tmp_path):
    """A composed choice compares, hashes, prints and serialises as its value."""
    import json

    from omegaconf import OmegaConf

    cfg = compose_config("pipeline.monitor=val/f1_macro", tmp_path=tmp_path)
    monitor = cfg.pipeline.monitor
    assert monitor == "val/f1_macro" and f"{monitor}" == "val/f1_macro" and repr(monitor) == "'val/f1_macro'"
    assert {"val/f1_macro": 1}[monitor] == 1 and json.dumps(monitor) == '"val/f1_macro"'
    assert "monitor: val/f1_macro" in OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize(
    "override,words",
    [
        ("trainer.max_epochs=0", "positive number of epochs"),
        ("pipeline.threshold=11", "must lie in [0, 10.0]"),
        ("pipeline.threshold=-1", "must lie in [0, 10.0]"),
    ],
)
def test_invalid_values_fail_before_any_work(tmp_path, override, words):
    cfg = compose_config(override, tmp_path=tmp_path)
    with pytest.raises(ValueError) as err:
        run(cfg, run_dir=str(tmp_path / "run"))
    assert words in str(err.value)
    assert not (tmp_path / "run" / "stages").exists()


def test_max_train_samples_larger_than_the_data(tmp_path, data_dir):
    needs("emotion6")
    cfg = compose_config("data=emotion6", "data.max_train_samples=99999", tmp_path=tmp_path)
    with pytest.raises(ValueError, match="max_train_samples=99999 is larger than the train split"):
        run(cfg, run_dir=str(tmp_path / "run"))


def test_skipped_rows_reach_metrics_json(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("text,label\n" + "".join(f"sample text {i},{'xyz'[i % 3]}\n" for i in range(60)) + ",x\n")
    cfg = compose_config(
        "data=custom",
        f"data.path={path}",
        "data.on_bad_rows=skip",
        "trainer.max_epochs=1",
        "pipeline.analyze=false",
        "logger=none",
        tmp_path=tmp_path,
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/skipped_rows"] == 1.0
    assert metrics["data/train_rows"] + metrics["data/val_rows"] + metrics["data/test_rows"] == 60


@pytest.mark.parametrize(
    "override,words",
    [
        ("model.batch_size=0", "data.batch_size=0: must be at least 1"),
        ("data.batch_size=-1", "data.batch_size=-1: must be at least 1"),
        ("data.max_length=0", "data.max_length=0: must be at least 1"),
        ("seed=-3", "seeds must be >= 0"),
        ("model.optimizer.lr=-0.001", "model.optimizer.lr=-0.001: must be > 0"),
        ("data.label_separator=''", "data.label_separator='': use null"),
        ("data.val_fraction=0", "data.val_fraction=0.0: must lie strictly between 0 and 1"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5: must lie strictly between 0 and 1"),
        ("model.pretrained=/nonexistent/model", "model.pretrained=/nonexistent/model: no such folder"),
        ("trainer.accelerator=gpu", "no CUDA GPU is visible"),
    ],
)
def test_every_bad_value_gets_one_line_before_any_work(tmp_path, override, words):
    import torch

    if "accelerator=gpu" in override and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer.accelerator=gpu is valid here")
    cfg = compose_config(override, tmp_path=tmp_path)
    with pytest.raises(ValueError) as err:
        run(cfg, run_dir=str(tmp_path / "run"))
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "stages").exists()


def test_data_batch_size_override_takes_effect():
    assert compose_config("data.batch_size=8").data.batch_size == 8
    assert compose_config("model.batch_size=12").data.batch_size == 12
    assert compose_config().data.batch_size == compose_config().model.batch_size == 64


@pytest.mark.parametrize(
    "label,words",
    [("1.0", "label 1.0 is a float"), ("true", "label True is a bool"), ('{"x": 1}', "label {'x': 1} is a dict")],
)
def test_jsonl_labels_of_the_wrong_type_are_refused(tmp_path, label, words):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(f'{{"text": "row {i}", "label": {i % 2}}}\n' for i in range(10))
        + f'{{"text": "odd", "label": {label}}}\n'
    )
    with pytest.raises(DataError, match=f"d.jsonl, line 11: {words}"):
        sources.load("custom", tmp_path, path=str(path))


def test_numeric_label_ids_with_gaps_are_named_in_a_warning(tmp_path, caplog):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{(0, 3)[i % 2]}\n" for i in range(10)))
    data = sources.load("custom", tmp_path, path=str(path))
    assert data.label_names == ["0", "1", "2", "3"]
    assert "label ids [1, 2] never occur" in caplog.text


def test_single_class_and_empty_split_are_refused_before_training(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(30)))
    cfg = compose_config("data=custom", f"data.path={one}", "logger=none", tmp_path=tmp_path)
    with pytest.raises(ValueError, match=r"training split has a single label \['a'\]"):
        run(cfg, run_dir=str(tmp_path / "run"))
    tr, te = tmp_path / "tr.csv", tmp_path / "te.csv"
    tr.write_text(GOOD)
    te.write_text("text,label\n")
    cfg = compose_config(
        "data=custom",
        f"data.train_path={tr}",
        f"data.val_path={tr}",
        f"data.test_path={te}",
        "logger=none",
        tmp_path=tmp_path,
    )
    with pytest.raises(DataError, match="te.csv: no usable rows"):
        run(cfg, run_dir=str(tmp_path / "run2"))


def test_unreadable_file_and_symlink_loop(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="loop.csv: cannot be read"):
        sources.load("custom", tmp_path, path=str(loop))


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_run_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="is not writable"):
        run(compose_config(tmp_path=tmp_path), run_dir=str(ro / "run"))


def test_read_only_run_dir_is_refused_even_as_root(tmp_path, monkeypatch):
    from pathlib import Path

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "touch", refuse)
    with pytest.raises(ValueError, match="run dir .* is not writable \\(Permission denied\\)"):
        run(compose_config(tmp_path=tmp_path), run_dir=str(tmp_path / "run"))


def test_unwritable_cache_dir_costs_time_not_the_run(tmp_path, caplog, monkeypatch):
    from eqn.data import datamodule

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(datamodule, "write_cache", refuse)
    dm = datamodule.EQNDataModule(
        "goemotions",
        str(tmp_path),
        {"kind": "word"},
        max_train_samples=40,
        max_eval_samples=20,
        cache_dir=str(tmp_path / "cache"),
    ).prepare()
    assert len(dm.split("train")) == 40
    assert "cannot write the token cache" in caplog.text and "continuing without it" in caplog.text


def test_annotation_on_cuda_without_a_gpu_is_refused(trained_run, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device=cuda is valid here")
    inp = tmp_path / "in.csv"
    inp.write_text("text\nhello\n")
    from eqn.annotate import main

    with pytest.raises(SystemExit, match="device=cuda: no CUDA GPU is visible"):
        main(
            [
                f"ckpt={trained_run / 'checkpoints' / 'eqn.ckpt'}",
                f"input={inp}",
                f"output={tmp_path / 'o.csv'}",
                "device=cuda",
            ]
        )
