"""Interrupted runs resume where they stopped; changed configs are refused; writes are atomic."""

import dataclasses
import json
import os
import signal
import subprocess

import pytest
import torch

from eqn.config import setting
from eqn.io import ConfigError, write_json
from eqn.models.module import EQNModule
from eqn.run import run
from tests.conftest import ROOT, TINY, compose_config, eqn_run_command

SMALL = [
    *TINY,
    "data.max_train_samples=300",
    "data.max_eval_samples=100",
    "trainer.max_epochs=2",
    "model.backbone.embed_dim=32",
    "model.backbone.num_filters=16",
]  # a small TextCNN


def test_changed_config_is_refused_unless_restart(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    run(compose_config(*SMALL, "pipeline=coeqn", tmp_path=tmp_path), run_dir=str(run_dir))
    with pytest.raises(ConfigError, match="different config or data"):
        run(
            compose_config(*SMALL, "pipeline=coeqn", "model.optimizer.lr=0.01", tmp_path=tmp_path), run_dir=str(run_dir)
        )
    metrics = run(
        compose_config(*SMALL, "pipeline=coeqn", "model.optimizer.lr=0.01", "pipeline.restart=true", tmp_path=tmp_path),
        run_dir=str(run_dir),
    )
    assert "coeqn/test/f1_macro" in metrics


def test_nan_loss_stops_the_stage_and_keeps_the_best_checkpoint(tmp_path, data_dir, monkeypatch):
    cfg = compose_config(*SMALL, "pipeline=coeqn", "trainer.max_epochs=3", tmp_path=tmp_path)
    original = EQNModule.loss

    def poisoned(self, outputs, batch):
        loss = original(self, outputs, batch)
        return loss * float("nan") if self.training and self.current_epoch == 1 else loss

    monkeypatch.setattr(EQNModule, "loss", poisoned)
    with pytest.raises(FloatingPointError, match="stage 'coeqn': training loss became nan"):
        run(cfg, run_dir=str(tmp_path / "run"))
    best = torch.load(tmp_path / "run" / "stages" / "coeqn" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 0
    assert "optimizer_states" not in best  # best.ckpt is weights-only; last.ckpt carries what a resume needs
    last = torch.load(tmp_path / "run" / "stages" / "coeqn" / "last.ckpt", weights_only=True)
    assert last["optimizer_states"] and last["loops"]
    assert all(torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point())


def test_interrupted_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1.0})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".eqn", "metrics.json"]  # the file and eqn's ledger


def test_sigkill_during_stage_two_then_resume(tmp_path, data_dir):
    """SIGKILL (no handler runs) in the middle of the second model's training; the same run then resumes: the first
    stage is not redone and the run finishes."""
    run_dir = tmp_path / "run"
    overrides = [*SMALL, "data.max_train_samples=160", "data.max_eval_samples=60"]
    args = eqn_run_command(tmp_path, run_dir, *overrides)
    env = {**os.environ, "EQN_FAULT_AT": "fit:eqn:epoch1", "EQN_FAULT_SIGNAL": str(int(signal.SIGKILL))}
    killed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (run_dir / "stages" / "eqn" / "last.ckpt").exists() and not (run_dir / "metrics.json").exists()
    first = (run_dir / "stages" / "coeqn" / "done.json").stat().st_mtime_ns
    metrics = run(compose_config(*overrides, tmp_path=tmp_path), run_dir=str(run_dir))
    assert {"coeqn/test/f1_macro", "eqn/test/f1_macro", "eqn/val/mse"} <= metrics.keys()
    assert (run_dir / "stages" / "coeqn" / "done.json").stat().st_mtime_ns == first  # stage 1 was not redone


@dataclasses.dataclass
class _Inner:
    lr: float = 0.1
    workers: int = setting(0)


@dataclasses.dataclass
class _Schema:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    new_knob: int = 3  # a setting added later, unmarked
    progress: bool = setting(True)


def test_the_resume_fingerprint_counts_every_schema_field_unless_marked():
    """The fingerprint is read from the schema: a new, unmarked field counts (it can never be silently ignored on
    resume); a field marked as not changing results does not."""
    from eqn.rundir import result_config, result_fields

    base = {"inner": {"lr": 0.1, "workers": 0}, "new_knob": 3, "progress": True}
    kept = result_fields(_Schema, base)
    assert result_fields(_Schema, {**base, "new_knob": 4}) != kept
    assert result_fields(_Schema, {**base, "inner": {"lr": 0.2, "workers": 0}}) != kept
    assert result_fields(_Schema, {**base, "progress": False, "inner": {"lr": 0.1, "workers": 8}}) == kept
    cfg = compose_config(*SMALL)
    same = [
        compose_config(*SMALL, o)
        for o in (
            "trainer.enable_progress_bar=false",
            "data.num_workers=2",
            "pipeline.analyze=true",
            "logger=csv",
            "paths.output_dir=elsewhere",
        )
    ]
    other = [
        compose_config(*SMALL, o)
        for o in (
            "callbacks=[early_stopping]",
            "trainer.precision=bf16-mixed",
            "model.head_init=default",
            "data.val_fraction=0.2",
        )
    ]
    assert all(result_config(c) == result_config(cfg) for c in same)
    assert all(result_config(c) != result_config(cfg) for c in other)  # early stopping used to be left out


def test_a_run_dir_fingerprinted_by_an_older_eqn_still_resumes(tmp_path, data_dir):
    """fingerprint.json without a scheme holds the digest of the older, fixed key list: the same config resumes
    (and the file is rewritten in the schema's scheme); another config is still refused."""
    from eqn.io import digest
    from eqn.rundir import legacy_result_config

    run_dir = tmp_path / "run"
    cfg = compose_config(*SMALL, "pipeline=coeqn", tmp_path=tmp_path)
    run(cfg, run_dir=str(run_dir))
    files = json.loads((run_dir / "fingerprint.json").read_text())
    assert files["scheme"] == 2
    from eqn.data import sources

    data_files = sources.load(cfg.data.name, cfg.data.data_dir).files
    write_json(run_dir / "fingerprint.json", {"fingerprint": digest(legacy_result_config(cfg), data_files)})
    assert "coeqn/test/f1_macro" in run(cfg, run_dir=str(run_dir))  # finished stages kept: resumes at once
    assert json.loads((run_dir / "fingerprint.json").read_text())["scheme"] == 2
    write_json(run_dir / "fingerprint.json", {"fingerprint": digest(legacy_result_config(cfg), data_files)})
    with pytest.raises(ConfigError, match="different config or data"):
        run(
            compose_config(*SMALL, "pipeline=coeqn", "model.optimizer.lr=0.01", tmp_path=tmp_path), run_dir=str(run_dir)
        )
