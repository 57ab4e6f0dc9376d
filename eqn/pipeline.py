"""The stages: baseline | coeqn -> regress -> eqn, each resumable, with the run directory as their contract.

run_dir/
  config.yaml             resolved config          fingerprint.json   config + data hash (resume guard)
  tokenizer.json          the text encoder         metrics.json       "<stage>/<split>/<metric>" -> float
  stages/<stage>/         Lightning's best.ckpt / last.ckpt, done.json once the stage is evaluated
  stages/<stage>/test_scores.safetensors           test scores, gold and thresholds (paired bootstrap in eqn.report)
  stages/regress<r>/targets.safetensors            relabeled_train.csv (last regression round)
  checkpoints/<stage>.ckpt  self-contained: weights, tuned thresholds, labels, tokenizer, model config
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch import __version__ as lightning_version
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from eqn import evaluation
from eqn.config import monitor_mode
from eqn.data.datamodule import EQNDataModule
from eqn.interrupt import TrainingState, fault_point
from eqn.io import ConfigError, atomic_path, digest, load_tensors, read_json, save_tensors, write_json, write_text
from eqn.models.module import EQNModule, build_module, load_module, plain
from eqn.predict import predict_scores, predict_splits
from eqn.relabeled import dataset_card, hf_dataset, write_dataset, write_intensity_csv
from eqn.stage_logging import StageLogger
from eqn.targets import regress_targets

log = logging.getLogger(__name__)
# The keys that change a run's results: the resume fingerprint hashes these (and the data files), nothing else,
# so logging, paths, progress bars or worker counts may change between an interrupted run and its resume.
RESULT_KEYS = ("seed", "model",
               *(f"data.{k}" for k in ("name", "tokenizer", "batch_size", "max_length", "max_train_samples",
                                       "max_eval_samples", "seed", "split_seed", "val_from_train", "bucket_batches",
                                       "scale", "on_bad_rows", "drop_empty_text", "val_fraction", "test_fraction",
                                       "path", "train_path", "val_path", "test_path", "text_column", "label_column",
                                       "id_column", "label_separator", "labels", "multi_label")),
               *(f"pipeline.{k}" for k in ("name", "rounds", "refit_from", "scale", "floor", "clip", "regress_val",
                                           "monitor", "budget", "threshold")),
               *(f"trainer.{k}" for k in ("max_epochs", "devices", "num_nodes", "precision", "gradient_clip_val",
                                          "accumulate_grad_batches", "val_check_interval", "limit_train_batches",
                                          "limit_val_batches", "deterministic")))


def result_config(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True)
    out = {}
    for key in RESULT_KEYS:
        node = container
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def stage_plan(cfg: DictConfig) -> list[str]:
    name = cfg.pipeline.name
    if name == "baseline":
        return ["baseline" if cfg.pipeline.budget == "single" else "baseline_matched"]
    if name == "coeqn":
        return ["coeqn"]
    rounds = cfg.pipeline.rounds
    return ["coeqn"] + [f"eqn_r{r}" for r in range(1, rounds)] + ["eqn"]


class Pipeline:
    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"run dir {self.run_dir} is not writable ({err.strerror}); choose another "
                              "hydra.run.dir") from None
        self.metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ top level
    def open(self) -> EQNDataModule:
        """Read the data and check that this run dir may hold this run; only then write the config."""
        cfg = self.cfg
        seed_everything(cfg.seed, workers=True)
        dm = self.build_datamodule()
        self.check_fingerprint(dm)
        fault_point("open")
        write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_text(self.run_dir / "tokenizer.json", dm.encoder.to_str())
        return dm

    def run(self, dm: EQNDataModule | None = None) -> dict[str, float]:
        cfg = self.cfg
        dm = dm if dm is not None else self.open()
        self.metrics.update({"data/skipped_rows": float(dm.data.skipped_rows),
                             **{f"data/{s}_rows": float(len(dm.split(s))) for s in ("train", "val", "test")}})
        started = time.perf_counter()
        stages = stage_plan(cfg)
        previous: Path | None = None
        for i, stage in enumerate(stages):
            if stage.startswith("baseline"):
                previous = self.fit_stage(stage, dm, "bce" if dm.multi_label else "ce")
                continue
            if i > 0:
                self.regress(dm, previous, round_=i, last=(i == len(stages) - 1))
            init = previous if (i > 0 and cfg.pipeline.refit_from == "coeqn") else None
            uses = self.artifact_name(i) if i > 0 else None
            previous = self.fit_stage(stage, dm, "eqn", init_from=init, uses_artifact=uses)
        self.metrics["time/pipeline_s"] = time.perf_counter() - started
        if not self.is_main:
            return self.metrics
        if cfg.pipeline.analyze and cfg.pipeline.name != "baseline":
            from eqn.analyze import analyze_run

            fault_point("analysis")
            analyze_run(self.run_dir, metrics=self.metrics)
        fault_point("metrics")
        write_json(self.run_dir / "metrics.json", self.metrics)  # written last: the run is complete
        self.summarise(stages)
        return self.metrics

    def summarise(self, stages: list[str]) -> None:
        for stage in stages:
            m = self.metrics
            line = (f"{stage:>9} test: f1_macro={m[f'{stage}/test/f1_macro']:.4f} "
                    f"f1_micro={m[f'{stage}/test/f1_micro']:.4f} accuracy={m[f'{stage}/test/accuracy']:.4f}")
            print(line, flush=True)
            log.info(line)
        print(f"outputs: {self.run_dir}\nmetrics: {self.run_dir / 'metrics.json'}", flush=True)

    # ------------------------------------------------------------------ building
    def build_datamodule(self) -> EQNDataModule:
        cfg = self.cfg
        saved = self.run_dir / "tokenizer.json"
        encoder = saved.read_text() if saved.exists() and not cfg.pipeline.restart else None
        dm = instantiate(cfg.data, encoder=encoder, _convert_="all")
        dm.prepare()
        return dm

    def build_trainer(self, stage: str | None, callbacks: list, logger: Any = False, **overrides) -> Trainer:
        return instantiate(self.cfg.trainer, callbacks=callbacks, logger=logger,
                           default_root_dir=str(self.run_dir / "stages" / (stage or "predict")), **overrides)

    def predict_trainer(self) -> Trainer:
        """Same devices and strategy as training: label regression and evaluation run on every rank."""
        if getattr(self, "_predict_trainer", None) is None:
            self._predict_trainer = instantiate(self.cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                                                enable_progress_bar=False, enable_model_summary=False,
                                                default_root_dir=str(self.run_dir / "stages" / "predict"))
        return self._predict_trainer

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files (with srun-launched DDP every rank runs this pipeline)."""
        return rank_zero_only.rank == 0

    @staticmethod
    def barrier() -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    # ------------------------------------------------------------------ resume guard
    def fingerprint(self, dm: EQNDataModule) -> str:
        return digest(result_config(self.cfg), dm.data.files)

    def check_fingerprint(self, dm: EQNDataModule) -> None:
        path = self.run_dir / "fingerprint.json"
        current = self.fingerprint(dm)
        old = read_json(path)["fingerprint"] if path.exists() else None
        if old not in (None, current) and not self.cfg.pipeline.restart:
            raise ConfigError(
                f"{self.run_dir} holds a run with a different config or data (fingerprint {old[:12]} != "
                f"{current[:12]}); use another hydra.run.dir, or pipeline.restart=true to discard it")
        if self.cfg.pipeline.restart:
            log.warning("pipeline.restart: discarding finished stages in %s", self.run_dir)
            for sub in ("stages", "checkpoints", "analysis", "logs"):
                shutil.rmtree(self.run_dir / sub, ignore_errors=True)
            for name in ("metrics.json", "relabeled_train.csv"):
                (self.run_dir / name).unlink(missing_ok=True)
        if self.is_main:
            write_json(path, {"fingerprint": current})

    # ------------------------------------------------------------------ stages
    def artifact_name(self, round_: int) -> str:
        return f"{self.cfg.run_name}-relabeled-r{round_}"

    def fit_stage(self, stage: str, dm: EQNDataModule, objective: str, init_from: Path | None = None,
                  uses_artifact: str | None = None) -> Path:
        stage_dir = self.run_dir / "stages" / stage
        final = self.run_dir / "checkpoints" / f"{stage}.ckpt"
        done = stage_dir / "done.json"
        if done.exists() and final.exists():
            log.info("stage %s already finished; skipping", stage)
            self.metrics.update(read_json(done)["metrics"])
            return final
        seed_everything(self.cfg.seed, workers=True)
        module = build_module(dm.spec, self.cfg, objective, stage)
        if init_from is not None:
            state = torch.load(init_from, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        monitor = self.cfg.pipeline.monitor
        checkpoint = ModelCheckpoint(dirpath=stage_dir, filename="best", monitor=monitor, mode=monitor_mode(monitor),
                                     save_last=True, save_top_k=1)
        extra = [instantiate(node) for node in (self.cfg.callbacks or {}).values() if node and "_target_" in node]
        epochs = self.cfg.trainer.max_epochs * (self.cfg.pipeline.rounds + 1 if stage == "baseline_matched" else 1)
        resume = stage_dir / "last.ckpt"
        started = time.perf_counter()
        with StageLogger(self.cfg, self.run_dir, stage) as logger:
            if uses_artifact:
                logger.use_artifact(uses_artifact)
            trainer = self.build_trainer(stage, [checkpoint, TrainingState(stage), *extra], logger.lightning, max_epochs=epochs)
            trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume.exists() else None, weights_only=True)
            fit_s = time.perf_counter() - started
            fault_point(f"fit:{stage}:trained")
            best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else resume
            module = load_module(best)
            metrics = self.evaluate(module, dm, stage)
            metrics[f"time/{stage}_fit_s"] = fit_s
            logger.log_results(stage, metrics, dm.label_names)
            fault_point(f"fit:{stage}:evaluated")
            if self.is_main:
                self.save_final_checkpoint(module, final)
                fault_point(f"fit:{stage}:saved")
                if self.cfg.pipeline.export:  # export/<stage>/: a Hugging Face-style model folder
                    from eqn.export import export

                    export(final, self.run_dir / "export" / stage, {**self.metrics, **metrics}, dm.name)
                    fault_point(f"fit:{stage}:exported")
                logger.log_stage_outputs(stage, self.run_dir, dm.split("test").texts)
                write_json(done, {"metrics": metrics, "best_checkpoint": str(best)})
        self.barrier()
        self.metrics.update(metrics)
        return final

    def evaluate(self, module: EQNModule, dm: EQNDataModule, stage: str) -> dict[str, float]:
        """Thresholds from val (tuned or fixed), then every decision rule on val and test."""
        splits = ("val", "test")
        predicted = predict_splits(self.predict_trainer(), module, [dm.predict_loader(s) for s in splits],
                                   [len(dm.split(s)) for s in splits], self.run_dir)
        scores = dict(zip(splits, predicted))
        module.fit_thresholds(scores["val"], dm.gold["val"])
        if self.is_main:
            save_tensors(self.run_dir / "stages" / stage / "test_scores.safetensors",
                         {"scores": scores["test"], "gold": dm.gold["test"], "thresholds": module.thresholds},
                         {"label_names": dm.label_names, "multi_label": dm.multi_label,
                          "objective": module.hparams.objective, "score_scale": module.score_scale,
                          "scale": self.cfg.pipeline.scale, "ids": dm.split("test").ids})
        out: dict[str, float] = {}
        for split, s in scores.items():
            m = evaluation.all_rule_metrics(s, dm.gold[split], dm.multi_label, module.thresholds, module.score_scale,
                                            dm.label_names)
            if module.hparams.objective == "eqn":
                m.update(evaluation.intensity_metrics(s, dm.gold[split], self.cfg.pipeline.scale))
            out.update({f"{stage}/{split}/{k}": v for k, v in m.items()})
        return out

    def save_final_checkpoint(self, module: EQNModule, final: Path) -> None:
        """Weights (with the thresholds fitted on val) and hyper-parameters: what annotation needs, no training state."""
        ckpt = {"state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                "hyper_parameters": plain(dict(module.hparams)), "pytorch-lightning_version": lightning_version}
        with atomic_path(final) as tmp:
            torch.save(ckpt, tmp)

    def regress(self, dm: EQNDataModule, checkpoint: Path, round_: int, last: bool) -> None:
        """Label regression: predict the training set (and val, if asked), keep gold at scale, replace the rest."""
        path = self.run_dir / "stages" / f"regress{round_}" / "targets.safetensors"
        p = self.cfg.pipeline
        splits = ("train", "val") if p.regress_val else ("train",)
        live = {"train": dm.targets, "val": dm.val_targets}
        if path.exists():
            saved, _ = load_tensors(path)
            for split in splits:
                live[split].copy_(saved[split])
            return
        with StageLogger(self.cfg, self.run_dir, f"regress{round_}") as logger:
            started = time.perf_counter()
            module = load_module(checkpoint)
            predictions = predict_splits(self.predict_trainer(), module, [dm.predict_loader(s) for s in splits],
                                         [len(dm.split(s)) for s in splits], self.run_dir)
            for split, predicted in zip(splits, predictions):
                live[split].copy_(regress_targets(dm.gold[split], predicted, p.scale, p.floor, p.clip))
            seconds = time.perf_counter() - started
            self.metrics[f"time/regress{round_}_s"] = seconds
            fault_point(f"regress{round_}:predicted")
            if not self.is_main:
                return
            artifact = path
            if last and p.save_relabeled:
                split = dm.split("train")
                artifact = self.run_dir / "relabeled_train.csv"
                write_intensity_csv(artifact, {"id": split.ids, "text": split.texts}, dm.targets, dm.label_names)
                fault_point(f"regress{round_}:csv")
                if p.export:  # relabeled/ (datasets) + relabeled_train.parquet, with a dataset card
                    dataset = hf_dataset(split.ids, split.texts, dm.targets, dm.label_names, dm.gold["train"])
                    write_dataset(self.run_dir, dataset, dataset_card(
                        dm.name, dm.label_names, p.scale, f"{self.cfg.model.name} CoEQN "
                        f"(export/{checkpoint.stem})", self.metrics))
                    fault_point(f"regress{round_}:dataset")
            # written last: its presence marks the round as done
            save_tensors(path, {s: live[s] for s in splits}, {"round": round_})
            changed = (dm.targets != dm.gold["train"].float() * p.scale).float().mean().item()
            logger.log_results(f"regress{round_}", {f"regress{round_}/seconds": seconds,
                                                     f"regress{round_}/changed_cells": changed}, [])
            logger.log_artifact(artifact, self.artifact_name(round_), "dataset")
