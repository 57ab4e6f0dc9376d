"""Hyperparameter search (`python -m eqn.run -m hparams_search=<name>`): the smoke preset runs, resumes after a kill
with exactly its trials and without retraining finished ones, prunes a clearly worse trial, and refuses a bad search
space in one line before any trial."""

import csv
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

from eqn.callbacks import PruneTrial
from eqn.io import ConfigError
from eqn.search import Pruned, journal_storage, objective_key, parse_space
from tests.conftest import ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}


def search(tmp_path, *args, fault=None):
    env = {**ENV, **({"EQN_FAULT_AT": fault} if fault else {})}
    preset = [] if any(a.startswith("hparams_search=") for a in args) else ["hparams_search=smoke"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "eqn.run",
            "-m",
            *preset,
            f"paths.output_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def test_smoke_search_resumes_after_a_kill_with_exactly_its_trials(tmp_path):
    killed = search(tmp_path, fault="search:trial0")  # dies right after its first trial is recorded
    assert killed.returncode != 0
    study = tmp_path / "search" / "smoke"
    first = study / "trial_0000" / "checkpoints" / "eqn.ckpt"
    stamp = first.stat().st_mtime_ns
    assert not (study / "trial_0001").exists()
    again = search(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    with open(study / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"] and rows[0]["state"] == "complete"
    assert all(r["state"] in ("complete", "pruned") for r in rows)  # the pruner stops trials below the median
    assert len({r["model.optimizer.lr"] for r in rows}) == 4  # the resumed sampler does not redraw trial 0
    assert first.stat().st_mtime_ns == stamp  # the finished trial was not retrained
    results = yaml.safe_load((study / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"model.optimizer.lr"}
    assert results["best_value"] == max(float(r["value"]) for r in rows if r["state"] == "complete")
    assert (study / "optimization_history.png").stat().st_size > 1000
    assert "rerun the best configuration: python -m eqn.run" in again.stdout
    assert "experiment=search_smoke" in again.stdout and "hparams_search" not in again.stdout.split("rerun")[-1]


def test_a_clearly_worse_trial_is_pruned(tmp_path):
    import optuna

    storage = journal_storage(tmp_path / "optuna.journal")
    study = optuna.create_study(
        study_name="s",
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for value in (0.40, 0.42):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 1e-3}, distributions=dist, value=value, intermediate_values={0: value, 1: value}
            )
        )
    pruner = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    journal = str(tmp_path / "optuna.journal")
    good = PruneTrial(journal, "s", study.ask(dist)._trial_id, "val/f1_macro", tmp_path / "good", pruner=pruner)
    bad = PruneTrial(journal, "s", study.ask(dist)._trial_id, "val/f1_macro", tmp_path, pruner=pruner)
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=0,
        callback_metrics={"val/f1_macro": torch.tensor(0.45)},
    )
    good.on_validation_end(trainer, None)  # better than the others: goes on
    trainer.callback_metrics = {"val/f1_macro": torch.tensor(0.05)}
    with pytest.raises(Pruned, match="pruned at epoch step 0"):
        bad.on_validation_end(trainer, None)
    assert not (tmp_path / "good").exists()
    assert (tmp_path / "pruned.json").exists()


@pytest.mark.parametrize(
    "params,words",
    [
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low=0.1 is greater than high=0.01"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.01, "log": True}}, "a log range must lie above 0"),
        ({"d": {"type": "categorical", "choices": []}}, "needs at least one choice"),
        ({"d": {"type": "normal", "low": 0, "high": 1}}, "type must be float, int or categorical"),
        ({"n": {"type": "int", "low": 1.5, "high": 3}}, "whole-number bounds"),
        ({}, "hydra.sweeper.params is empty"),
    ],
)
def test_bad_search_spaces_are_refused_in_one_line(params, words):
    with pytest.raises(ConfigError, match=words) as err:
        parse_space(params)
    assert "\n" not in str(err.value)


def test_objectives_must_be_reported_validation_figures():
    assert objective_key("{last}/val/f1_macro", ["coeqn", "eqn"]) == "eqn/val/f1_macro"
    assert objective_key("baseline/val/tuned/f1_micro", ["baseline"]) == "baseline/val/tuned/f1_micro"
    for objective, words in (
        ("{last}/test/f1_macro", "never on test"),
        ("eqn/val/f1_macro", "no stage"),
        ("{last}/val/auroc", "does not report"),
        ("{last}/val/mse", "does not report"),
    ):
        with pytest.raises(ConfigError, match=words):
            objective_key(objective, ["baseline"])


def test_an_unknown_key_in_the_space_stops_before_any_trial(tmp_path):
    presets = tmp_path / "conf" / "hparams_search"
    presets.mkdir(parents=True)
    (presets / "misspelt.yaml").write_text(
        (ROOT / "conf" / "hparams_search" / "smoke.yaml")
        .read_text()
        .replace("model.optimizer.lr:", "model.optimizer.lrr:")
    )
    proc = search(tmp_path, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "hparams_search=misspelt")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("eqn: error:")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-1500:]
    assert "hydra.sweeper.params.model.optimizer.lrr: not a config key" in lines[0]
    assert not (tmp_path / "search" / "smoke" / "trial_0000").exists()
