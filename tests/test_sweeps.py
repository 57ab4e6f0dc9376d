"""Sweeps (basic, submitit_local), W&B offline runs per stage, the results report, and the presets."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from eqn.report import report
from eqn.run import run
from tests.conftest import CONF, ROOT, TINY, compose_config, needs

RUN = [*TINY, "data.max_train_samples=80", "data.max_eval_samples=40"]


def sweep(tmp_path, *overrides, env=None):
    out = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "eqn.run",
        "-m",
        *overrides,
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={out}",
    ]
    done = subprocess.run(
        args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_seeded_2x2x2_sweep_with_offline_wandb_and_report(tmp_path, data_dir):
    needs("emotion6", "tfn3")
    out = sweep(
        tmp_path,
        "experiment=smoke_grid",
        "data.max_train_samples=40",
        "data.max_eval_samples=24",
        "logger=wandb",
        env={"WANDB_MODE": "offline"},
    )
    jobs = sorted(p.parent for p in out.glob("*/metrics.json"))
    assert len(jobs) == 8
    groups = set()
    for job in jobs:
        records = {p.parent.name: json.loads(p.read_text()) for p in job.glob("stages/*/wandb_run.json")}
        assert set(records) == {"coeqn", "regress1", "eqn"}
        assert all(r["job_type"] == stage and r["mode"] == "offline" for stage, r in records.items())
        assert len({r["id"] for r in records.values()}) == 3  # one W&B run per stage
        assert len(list((job / "wandb").glob("offline-run-*"))) == 3
        groups |= {r["group"] for r in records.values()}
    assert len(groups) == 1 and groups.pop().startswith("sweep-")  # the whole sweep is one group

    (out / "8_broken").mkdir()  # a job that died before writing anything but Hydra's config
    (out / "8_broken" / ".hydra").mkdir()
    (out / "8_broken" / ".hydra" / "config.yaml").write_text(
        "data: {name: tfn3}\nmodel: {name: lstm}\npipeline: {name: eqn}\nseed: 3\n"
    )
    md, csv = report(out)
    table = pd.read_csv(csv)
    macro = table[table.metric == "f1_macro"]
    assert set(zip(macro.dataset, macro.backbone)) == {(d, m) for d in ("emotion6", "tfn3") for m in ("ann", "textcnn")}
    assert set(macro.stage) == {"coeqn", "eqn"} and (macro.n == 2).all()
    text = md.read_text()
    assert "| emotion6 | ann |" in text and "(n=2)" in text
    assert "8_broken" in text and "tfn3 / lstm / eqn / seed 3" in text


def test_wandb_mode_is_not_leaked_and_crashed_stage_finishes_its_run(tmp_path, data_dir, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_config(*RUN, "pipeline=coeqn", "logger=wandb", tmp_path=tmp_path)
    assert cfg.logger.mode == "offline"
    run(cfg, run_dir=str(tmp_path / "ok"))
    assert "WANDB_MODE" not in os.environ
    assert wandb.run is None

    from eqn.models.module import EQNModule

    def boom(self, *args):
        raise RuntimeError("stage crashed")

    monkeypatch.setattr(EQNModule, "training_step", boom)
    with pytest.raises(RuntimeError, match="stage crashed"):
        run(cfg, run_dir=str(tmp_path / "crash"))
    assert wandb.run is None  # finished, so the next sweep job starts a clean run
    assert "WANDB_MODE" not in os.environ


def test_submitit_local_launcher(tmp_path, data_dir):
    out = sweep(tmp_path, "cluster=local", "seed=0,1", "pipeline=coeqn", "logger=none", *RUN)
    assert sorted(p.parent.name for p in out.glob("*/metrics.json")) == [
        "0_goemotions-textcnn-coeqn-s0",
        "1_goemotions-textcnn-coeqn-s1",
    ]


def test_slurm_preset_ties_tasks_to_devices():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config", overrides=["cluster=slurm", "trainer.devices=8", "trainer.num_nodes=2"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 8 and launcher.gpus_per_node == 8 and launcher.nodes == 2
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.plugins[0].auto_requeue is False


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes(preset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
    for group in ("data", "model", "pipeline"):
        for choice in str(params.get(group, "")).split(","):
            if choice:
                assert (CONF / group / f"{choice}.yaml").exists(), f"{preset}: {group}={choice} does not exist"


def test_parallel_local_presets_split_the_cores_between_jobs():
    from eqn.config import threads_per_job

    cores = len(os.sched_getaffinity(0))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["cluster=joblib", "hydra.launcher.n_jobs=2"], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    assert cfg.threads == max(1, cores // 2) == threads_per_job(2)
    assert threads_per_job(-1) == 1 and threads_per_job(1) == cores
