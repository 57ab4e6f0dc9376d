"""The stages: baseline | coeqn -> regress -> eqn, each resumable, with the run directory as their contract.

run_dir/
  config.yaml             resolved config          fingerprint.json   config + data hash (resume guard)
  tokenizer.json          the text encoder         metrics.json       "<stage>/<split>/<metric>" -> float
  stages/<stage>/         Lightning's best.ckpt / last.ckpt, done.json once the stage is evaluated
  stages/regress<r>/targets.pt                     relabeled_train.csv (last regression round)
  checkpoints/<stage>.ckpt  self-contained: weights, tuned thresholds, labels, tokenizer, model config
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from eqn import evaluation
from eqn.data.datamodule import EQNDataModule
from eqn.io import ConfigError, atomic_path, read_json, write_json, write_text
from eqn.models.module import EQNModule
from eqn.predict import predict_scores, predict_splits
from eqn.relabeled import write_intensity_csv
from eqn.stage_logging import StageLogger
from eqn.targets import regress_targets

log = logging.getLogger(__name__)
# Keys that do not change results: changing them may resume a run.
VOLATILE = ("trainer.enable_progress_bar", "trainer.log_every_n_steps", "pipeline.restart", "pipeline.analyze",
            "logger", "paths", "print_config", "data.num_workers", "data.eval_batch_size", "data.cache_dir")


def stage_plan(cfg: DictConfig) -> list[str]:
    name = cfg.pipeline.name
    if name == "baseline":
        return ["baseline"]
    if name == "coeqn":
        return ["coeqn"]
    rounds = cfg.pipeline.rounds
    return ["coeqn"] + [f"eqn_r{r}" for r in range(1, rounds)] + ["eqn"]


class Pipeline:
    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ top level
    def run(self) -> dict[str, float]:
        cfg = self.cfg
        write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        seed_everything(cfg.seed, workers=True)
        dm = self.build_datamodule()
        self.check_fingerprint(dm)
        write_text(self.run_dir / "tokenizer.json", dm.encoder.to_str())
        self.metrics.update({"data/skipped_rows": float(dm.data.skipped_rows),
                             **{f"data/{s}_rows": float(len(dm.split(s))) for s in ("train", "val", "test")}})
        started = time.perf_counter()
        stages = stage_plan(cfg)
        previous: Path | None = None
        for i, stage in enumerate(stages):
            if stage == "baseline":
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
        write_json(self.run_dir / "metrics.json", self.metrics)
        self.summarise(stages)
        if cfg.pipeline.analyze and "baseline" not in stages:
            from eqn.analyze import analyze_run

            analyze_run(self.run_dir, datamodule=dm)
        return self.metrics

    def summarise(self, stages: list[str]) -> None:
        for stage in stages:
            m = self.metrics
            line = (f"{stage:>9} test: f1_macro={m[f'{stage}/test/f1_macro']:.4f} "
                    f"f1_micro={m[f'{stage}/test/f1_micro']:.4f} accuracy={m[f'{stage}/test/accuracy']:.4f}")
            print(line, flush=True)
            log.info(line)
        print(f"metrics: {self.run_dir / 'metrics.json'}", flush=True)

    # ------------------------------------------------------------------ building
    def build_datamodule(self) -> EQNDataModule:
        cfg = self.cfg
        data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
        if cfg.model.batch_size:
            data_cfg["batch_size"] = cfg.model.batch_size
        tokenizer = OmegaConf.to_container(cfg.model.tokenizer, resolve=True)
        saved = self.run_dir / "tokenizer.json"
        encoder = saved.read_text() if saved.exists() and not cfg.pipeline.restart else None
        dm = instantiate(data_cfg, tokenizer=tokenizer, encoder=encoder, _convert_="all")
        dm.prepare()
        return dm

    def build_module(self, dm: EQNDataModule, objective: str, stage: str) -> EQNModule:
        cfg = self.cfg
        backbone = OmegaConf.to_container(cfg.model.backbone, resolve=True)
        backbone.update(vocab_size=dm.encoder.vocab_size, pad_id=dm.encoder.pad_id)
        module = EQNModule(backbone=backbone, label_names=dm.label_names, multi_label=dm.multi_label,
                           objective=objective, scale=cfg.pipeline.scale, head_dropout=cfg.model.head_dropout,
                           optimizer=OmegaConf.to_container(cfg.model.optimizer, resolve=True),
                           scheduler=OmegaConf.to_container(cfg.model.scheduler, resolve=True),
                           encoder=dm.encoder.to_str(), stage=stage)
        dm.min_length = module.min_length
        if cfg.model.embedding_init and dm.encoder.kind == "word":
            from eqn.models.backbones import init_word_embeddings

            count = init_word_embeddings(module.backbone.embedding, dm.encoder.tokenizer.get_vocab(),
                                         cfg.model.embedding_init)
            log.info("initialised %d word embeddings from %s", count, cfg.model.embedding_init)
        return module

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
        container = OmegaConf.to_container(self.cfg, resolve=True)
        for key in VOLATILE:
            *parents, leaf = key.split(".")
            node = container
            for p in parents:
                node = node.get(p, {})
            node.pop(leaf, None)
        h = hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode())
        for f in dm.data.files:
            h.update(hashlib.sha256(Path(f).read_bytes()).digest())
        return h.hexdigest()

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
            for sub in ("stages", "checkpoints"):
                shutil.rmtree(self.run_dir / sub, ignore_errors=True)
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
        module = self.build_module(dm, objective, stage)
        if init_from is not None:
            state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
            module.load_state_dict(state)
        checkpoint = ModelCheckpoint(dirpath=stage_dir, filename="best", monitor=self.cfg.pipeline.monitor,
                                     mode=self.cfg.pipeline.monitor_mode, save_last=True, save_top_k=1)
        resume = stage_dir / "last.ckpt"
        started = time.perf_counter()
        with StageLogger(self.cfg, self.run_dir, stage) as logger:
            if uses_artifact:
                logger.use_artifact(uses_artifact)
            trainer = self.build_trainer(stage, [checkpoint], logger.lightning)
            trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume.exists() else None)
            fit_s = time.perf_counter() - started
            best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else resume
            module = EQNModule.load_from_checkpoint(best, map_location="cpu", weights_only=False)
            metrics = self.evaluate(module, dm, stage)
            metrics[f"time/{stage}_fit_s"] = fit_s
            logger.log_results(stage, metrics, dm.label_names)
        if self.is_main:
            self.save_final_checkpoint(best, module, final)
            write_json(done, {"metrics": metrics, "best_checkpoint": str(best)})
        self.barrier()
        self.metrics.update(metrics)
        return final

    def evaluate(self, module: EQNModule, dm: EQNDataModule, stage: str) -> dict[str, float]:
        trainer = self.predict_trainer()
        splits = ("val", "test")
        predicted = predict_splits(trainer, module, [dm.predict_loader(s) for s in splits],
                                   [len(dm.split(s)) for s in splits], self.run_dir)
        scores = dict(zip(splits, predicted))
        if dm.multi_label:
            if self.cfg.pipeline.threshold is not None:
                value = self.cfg.pipeline.threshold / self.cfg.pipeline.scale * module.score_scale
                module.thresholds.fill_(value)
            else:
                module.thresholds.copy_(evaluation.tune_thresholds(scores["val"], dm.gold["val"], module.score_scale))
        if self.is_main:
            with atomic_path(self.run_dir / "stages" / stage / "scores_test.pt") as tmp:
                torch.save({"scores": scores["test"], "gold": dm.gold["test"], "label_names": dm.label_names,
                            "objective": module.hparams.objective, "scale": module.score_scale}, tmp)
        out: dict[str, float] = {}
        for split, s in scores.items():
            pred = evaluation.decide(s, dm.multi_label, module.thresholds)
            m = evaluation.classification_metrics(pred, dm.gold[split], dm.multi_label, dm.label_names)
            if module.hparams.objective == "eqn":
                m.update(evaluation.intensity_metrics(s, dm.gold[split], self.cfg.pipeline.scale))
            out.update({f"{stage}/{split}/{k}": v for k, v in m.items()})
        return out

    def save_final_checkpoint(self, best: Path, module: EQNModule, final: Path) -> None:
        ckpt = torch.load(best, map_location="cpu", weights_only=False)
        ckpt["state_dict"]["thresholds"] = module.thresholds.detach().cpu()
        ckpt["hyper_parameters"]["thresholds"] = module.thresholds.tolist()
        for key in ("optimizer_states", "lr_schedulers", "loops"):
            ckpt.pop(key, None)  # weights for annotation, not a training state
        with atomic_path(final) as tmp:
            torch.save(ckpt, tmp)

    def regress(self, dm: EQNDataModule, checkpoint: Path, round_: int, last: bool) -> None:
        """Label regression: predict the training set, keep gold at scale, replace the rest (in place)."""
        path = self.run_dir / "stages" / f"regress{round_}" / "targets.pt"
        if path.exists():
            dm.targets.copy_(torch.load(path, weights_only=True))
            return
        with StageLogger(self.cfg, self.run_dir, f"regress{round_}") as logger:
            started = time.perf_counter()
            module = EQNModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
            train = dm.predict_loader("train")
            predictions = predict_scores(self.predict_trainer(), module, train, len(dm.split("train")))
            p = self.cfg.pipeline
            dm.targets.copy_(regress_targets(dm.gold["train"], predictions, p.scale, p.floor))
            seconds = time.perf_counter() - started
            self.metrics[f"time/regress{round_}_s"] = seconds
            if not self.is_main:
                return
            artifact = path
            if last and self.cfg.pipeline.save_relabeled:
                split = dm.split("train")
                artifact = self.run_dir / "relabeled_train.csv"
                write_intensity_csv(artifact, {"id": split.ids, "text": split.texts}, dm.targets, dm.label_names)
            with atomic_path(path) as tmp:  # written last: its presence marks the round as done
                torch.save(dm.targets.clone(), tmp)
            changed = (dm.targets != dm.gold["train"].float() * p.scale).float().mean().item()
            logger.log_results(f"regress{round_}", {f"regress{round_}/seconds": seconds,
                                                     f"regress{round_}/changed_cells": changed}, [])
            logger.log_artifact(artifact, self.artifact_name(round_), "dataset")
