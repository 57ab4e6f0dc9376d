"""Label regression as a callback family: regression=offline is today's EQN; regression=progressive regresses the
targets inside one training from the model's own previous-epoch predictions (PS-KD style)."""

import json

import pandas as pd
import pytest
import torch

from eqn.interrupt import InjectedFault
from eqn.io import ConfigError
from eqn.run import run
from eqn.targets import alpha_at, mix_targets
from tests.conftest import SMALL_TEXTCNN, TINY, compose_config

RUN = [*TINY, *SMALL_TEXTCNN, "trainer.max_epochs=3", "regression=progressive"]


def test_alpha_schedules_take_the_documented_values():
    assert [alpha_at(e, 1, 5, 0.8) for e in range(5)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [alpha_at(e, 2, 4, 0.5, "constant") for e in range(4)] == [0.0, 0.0, 0.5, 0.5]
    assert alpha_at(1, 1, 2, 0.8) == pytest.approx(0.8)  # the last epoch reaches alpha
    with pytest.raises(ValueError, match="linear or constant"):
        alpha_at(3, 1, 5, 0.8, "cosine")


def test_mixed_targets_keep_gold_at_scale_and_the_rest_in_range():
    gold = torch.tensor([[True, False, False], [False, False, True]])
    initial = gold.float() * 10
    predictions = torch.tensor([[3.0, 12.0, -2.0], [4.0, 5.0, 1.0]])
    mixed = mix_targets(gold, initial, predictions, 0.5)
    assert mixed[gold].eq(10.0).all()
    assert mixed.tolist() == [[10.0, 5.0, 0.0], [2.0, 2.5, 10.0]]


def outcome(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return (
        {k: v for k, v in metrics.items() if not k.startswith("time/")},
        pd.read_csv(run_dir / "relabeled_train.csv", keep_default_na=False),
    )


@pytest.fixture(scope="module")
def progressive(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progressive")
    run(compose_config(*RUN, tmp_path=tmp), run_dir=str(tmp / "run"))
    return tmp / "run"


def test_progressive_run_regresses_non_gold_targets_and_keeps_gold(progressive):
    metrics, relabeled = outcome(progressive)
    assert "eqn/test/f1_macro" in metrics and "coeqn/test/f1_macro" not in metrics  # one training
    values = relabeled.iloc[:, 2:].to_numpy(dtype=float)
    assert values.min() >= 0.0 and values.max() <= 10.0
    assert (values == 10.0).sum(1).min() >= 1  # every row keeps its gold label(s) at exactly 10
    assert ((values > 0) & (values < 10)).any()  # and non-gold cells now carry graded beliefs
    log = pd.read_csv(next((progressive / "logs").rglob("metrics.csv"))) if (progressive / "logs").exists() else None
    assert log is None or "regression/alpha" in log.columns


@pytest.mark.parametrize("point", ["fit:eqn:epoch1", "fit:eqn:val2", "fit:eqn:trained", "progressive:csv"])
def test_a_crash_inside_progressive_training_resumes_to_the_same_run(point, progressive, tmp_path, monkeypatch):
    cfg = compose_config(*RUN, tmp_path=tmp_path)
    monkeypatch.setenv("EQN_FAULT_AT", point)
    with pytest.raises(InjectedFault, match=point):
        run(cfg, run_dir=str(tmp_path / "run"))
    monkeypatch.delenv("EQN_FAULT_AT")
    run(cfg, run_dir=str(tmp_path / "run"))
    metrics, relabeled = outcome(tmp_path / "run")
    reference = outcome(progressive)
    assert metrics == pytest.approx(reference[0], abs=1e-5)
    pd.testing.assert_frame_equal(relabeled, reference[1])


def test_progressive_with_soft_bce_targets_runs(tmp_path):
    metrics = run(compose_config(*RUN, "regression.loss=bce", tmp_path=tmp_path), run_dir=str(tmp_path / "run"))
    assert 0.0 <= metrics["eqn/test/f1_macro"] <= 1.0


@pytest.mark.parametrize(
    "override,words",
    [
        ("regression.start=0", "regression.start=0: must lie in 1..2"),
        ("regression.start=3", "regression.start=3: must lie in 1..2"),
        ("regression.alpha=0", "regression.alpha=0"),
        ("trainer=ddp", "regression=progressive gathers each epoch's predictions in one process"),
    ],
)
def test_bad_progressive_settings_are_one_line(tmp_path, override, words):
    from eqn.config import validate

    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        validate(compose_config(*RUN, override, tmp_path=tmp_path))
    with pytest.raises(ConfigError, match="regression.loss=bce: the offline pipeline"):
        validate(compose_config("regression.loss=bce", tmp_path=tmp_path))


def teacher_cfg(tmp_path, *teachers, extra=()):
    listed = ",".join(str(t) for t in teachers)
    return compose_config(
        *[a for a in RUN if a != "regression=progressive"],
        "regression=teacher",
        f"regression.teachers=[{listed}]",
        *extra,
        tmp_path=tmp_path,
    )


def test_teacher_targets_are_the_teachers_intensities_on_the_training_rows(progressive, trained_run, tmp_path):
    from eqn import load
    from eqn.data import sources

    teachers = [progressive / "checkpoints" / "eqn.ckpt", trained_run / "checkpoints" / "coeqn.ckpt"]
    run(teacher_cfg(tmp_path, *teachers), run_dir=str(tmp_path / "run"))
    relabeled = pd.read_csv(tmp_path / "run" / "relabeled_train.csv", keep_default_na=False)
    texts = relabeled["text"].tolist()
    mean = sum(load(str(t)).intensities(load(str(t)).scores(texts)) for t in teachers) / 2
    values = torch.tensor(relabeled.iloc[:, 2:].to_numpy(dtype=float), dtype=torch.float32)
    gold = values == 10.0
    expected = torch.where(gold, torch.full_like(mean, 10.0), mean.clamp(0, 10))
    assert gold.any(1).all() and (values - expected).abs().max() <= 0.006  # 2-decimal CSV
    assert sources.load("goemotions", "/nonexistent").label_names == list(relabeled.columns[2:])


def test_a_crash_between_the_teachers_predictions_and_training_resumes(progressive, tmp_path, monkeypatch):
    teacher = progressive / "checkpoints" / "eqn.ckpt"
    reference = tmp_path / "reference"
    run(teacher_cfg(tmp_path, teacher), run_dir=str(reference))
    monkeypatch.setenv("EQN_FAULT_AT", "teacher:predicted")
    with pytest.raises(InjectedFault):
        run(teacher_cfg(tmp_path, teacher), run_dir=str(tmp_path / "run"))
    monkeypatch.delenv("EQN_FAULT_AT")
    run(teacher_cfg(tmp_path, teacher), run_dir=str(tmp_path / "run"))
    assert outcome(tmp_path / "run")[0] == pytest.approx(outcome(reference)[0], abs=1e-5)
    pd.testing.assert_frame_equal(outcome(tmp_path / "run")[1], outcome(reference)[1])


def test_bad_teachers_are_refused_in_one_line_before_training(tmp_path):
    from eqn.io import DataError

    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="broken.ckpt: not a PyTorch checkpoint") as err:
        run(teacher_cfg(tmp_path, tmp_path / "broken.ckpt"), run_dir=str(tmp_path / "run"))
    assert "\n" not in str(err.value) and not (tmp_path / "run" / "stages" / "eqn").exists()
    with pytest.raises(ConfigError, match="regression.teachers: .*missing.ckpt: no such checkpoint"):
        run(teacher_cfg(tmp_path, tmp_path / "missing.ckpt"), run_dir=str(tmp_path / "run2"))
    custom = tmp_path / "two.csv"
    custom.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40)))
    other = tmp_path / "other"
    run(
        compose_config(
            "data=custom",
            f"data.path={custom}",
            "trainer.max_epochs=1",
            "logger=none",
            "pipeline=baseline",
            tmp_path=tmp_path,
        ),
        run_dir=str(other),
    )
    with pytest.raises(ConfigError, match="other/checkpoints/baseline.ckpt: its labels"):
        run(teacher_cfg(tmp_path, other / "checkpoints" / "baseline.ckpt"), run_dir=str(tmp_path / "run3"))
    assert not (tmp_path / "run3" / "stages" / "eqn").exists()


def test_the_report_groups_runs_by_regression_variant(progressive, trained_run, tmp_path):
    import shutil

    from eqn.report import collect, report

    shutil.copytree(progressive, tmp_path / "progressive")
    shutil.copytree(trained_run, tmp_path / "offline")
    frame, problems = collect(tmp_path)
    assert sorted(frame.stage) == ["coeqn", "eqn", "eqn[progressive-mse]"] and not problems
    md, _ = report(tmp_path, resamples=20)
    text = md.read_text()
    assert "| EQN [progressive-mse] |" in text and "EQN [progressive-mse] vs EQN" in text


def test_the_report_tells_one_teacher_from_an_ensemble():
    from eqn.report import variant

    one = {"regression": {"name": "teacher", "loss": "bce", "teachers": ["a/baseline.ckpt"]}}
    three = {"regression": {"name": "teacher", "loss": "mse", "teachers": ["a.ckpt", "b.ckpt", "c.ckpt"]}}
    assert variant(one, "eqn") == "eqn[teacher-bce]"
    assert variant(three, "eqn") == "eqn[teacher-ensemble-mse]"
    assert variant(three, "coeqn") == "coeqn" and variant({}, "eqn") == "eqn"


def test_the_best_checkpoint_is_chosen_among_the_regressed_epochs(tmp_path, data_dir, monkeypatch):
    """Validation MSE against the hard 0/10 targets favours the epochs before `start` (plain CoEQN training); a
    progressive run must keep a model trained on regressed targets. Here validation loss rises with every epoch."""
    from eqn.models.module import EQNModule

    original = EQNModule.loss

    def rising(self, outputs, batch):
        loss = original(self, outputs, batch)
        return loss if self.training else loss + 100.0 * self.current_epoch

    monkeypatch.setattr(EQNModule, "loss", rising)
    run(compose_config(*RUN, "regression.start=1", tmp_path=tmp_path), run_dir=str(tmp_path / "run"))
    stage = tmp_path / "run" / "stages" / "eqn"
    assert torch.load(stage / "best.ckpt", weights_only=True)["epoch"] == 1  # the best of the regressed epochs 1-2
    assert torch.load(stage / "last.ckpt", weights_only=True)["epoch"] == 2  # last.ckpt kept every epoch
