"""The stages over a run directory: fit (train, evaluate, save, export), evaluate, regress.

Each is a function of a RunContext (config, run dir, metrics, rank, trainers) and is resumable on its own:
a finished fit has stages/<stage>/done.json; a finished regression has stages/regress<r>/targets.safetensors.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch import __version__ as lightning_version
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from eqn import evaluation
from eqn.callbacks import TrainingState, prune_callback
from eqn.config import monitor_mode, stage_plan
from eqn.data.datamodule import EQNDataModule
from eqn.interrupt import fault_point
from eqn.io import atomic_path, load_tensors, read_json, save_tensors, write_json
from eqn.models.module import EQNModule, build_module, load_module, plain
from eqn.ownership import record_tree
from eqn.predict import predict_splits
from eqn.relabeled import write_relabeled
from eqn.stage_logging import StageLogger
from eqn.targets import regress_targets

log = logging.getLogger(__name__)


class RunContext:
    """What every stage needs: the config, the run dir, the metrics so far, which rank writes, the trainers."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.metrics: dict[str, float] = {}
        self._predict_trainer: Trainer | None = None

    def build_trainer(self, stage: str | None, callbacks: list, logger: Any = False, **overrides) -> Trainer:
        return instantiate(
            self.cfg.trainer,
            callbacks=callbacks,
            logger=logger,
            default_root_dir=str(self.run_dir / "stages" / (stage or "predict")),
            **overrides,
        )

    def predict_trainer(self) -> Trainer:
        """Same devices and strategy as training: label regression and evaluation run on every rank."""
        if self._predict_trainer is None:
            self._predict_trainer = instantiate(
                self.cfg.trainer,
                logger=False,
                callbacks=[],
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=str(self.run_dir / "stages" / "predict"),
            )
        return self._predict_trainer

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files (with srun-launched DDP every rank runs this pipeline)."""
        return getattr(rank_zero_only, "rank", 0) == 0  # Lightning sets the rank on the function

    @staticmethod
    def barrier() -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


class OwnedCheckpoint(ModelCheckpoint):
    """Lightning's checkpointing, each saved file recorded as eqn's own (so pipeline.restart may remove it).
    Only last.ckpt (what a resume needs) holds the optimizer, scheduler and loop state; best.ckpt is read for its
    weights alone, so it is saved weights-only (a third of the bytes with AdamW: 90 MB instead of 260 for MiniLM)."""

    def __init__(self, *args: Any, from_epoch: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.from_epoch = from_epoch  # best.ckpt is chosen among the epochs from this one on

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run dir that moved (copied to another disk, another node's path) resumes as if it had not: the recorded
        paths are mapped into the new folder. (Lightning would keep only best_model_path, forget the best score, so
        the next epoch became "best" whatever its score, and save beside the old files as best-v1.ckpt/last-v1.ckpt.)"""
        old, new = state_dict.get("dirpath"), str(self.dirpath or "")
        if old and new and os.path.normpath(old) != os.path.normpath(new):

            def moved(path: Any) -> Any:
                if not isinstance(path, str) or not path:
                    return path
                inside = os.path.relpath(path, old)
                return path if inside.startswith("..") else os.path.join(new, inside)

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,  # as Lightning compares it
                **{k: moved(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path", "last_model_path")},
                "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
            }
        super().load_state_dict(state_dict)

    def _save_topk_checkpoint(self, trainer: Trainer, monitor_candidates: dict) -> None:
        if trainer.current_epoch >= self.from_epoch:
            super()._save_topk_checkpoint(trainer, monitor_candidates)
        # last.ckpt after every epoch: Lightning writes it only in a step that saved a top-k checkpoint, so a resume
        # after an epoch that did not improve the monitor would have trained that epoch again
        self._last_global_step_saved = trainer.global_step

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Lightning's save, made atomic: written to an eqn temporary, recorded, then renamed into place (a kill
        leaves the previous checkpoint, never a torn one; a file eqn did not write there is never replaced)."""
        from weakref import proxy

        from eqn.ownership import drop_temp, install_file, make_temp, owned_entry

        # Lightning names last.ckpt in last_model_path before saving it (ModelCheckpoint._save_last_checkpoint)
        self.save_weights_only = filepath != self.last_model_path
        target = Path(filepath)
        if trainer.is_global_zero:
            previous = owned_entry(target) if target.exists() else None
            tmp = make_temp(target.parent, target.name)
            try:
                trainer.save_checkpoint(str(tmp), self.save_weights_only)
                install_file(tmp, target, previous["sha256"] if previous else None)
            finally:
                drop_temp(tmp)
        else:
            trainer.save_checkpoint(filepath, self.save_weights_only)  # collective; only rank 0 writes
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def artifact_name(cfg: DictConfig, round_: int) -> str:
    return f"{cfg.run_name}-relabeled-r{round_}"


@dataclass(frozen=True)
class Step:
    """One thing a run does, in order: fit a stage, or regress the training targets between two fits.
    fit: `objective`; `refit` starts from the previous fit's weights; `artifact` names the relabeled data it uses
    (W&B); `regressing` trains with label regression inside it (regression=progressive|teacher)."""

    kind: str  # fit | regress
    stage: str
    objective: str = "eqn"
    round: int = 0
    last: bool = False
    refit: bool = False
    artifact: str | None = None
    regressing: bool = False


def plan(cfg: DictConfig, multi_label: bool) -> list[Step]:
    """The run's steps, from the stage plan: baseline (BCE or CE), or coeqn -> [regress -> eqn] x rounds, or one EQN
    training that regresses as it goes."""
    from eqn.regression import LOSSES

    stages, steps = stage_plan(cfg), []
    for i, stage in enumerate(stages):
        if stage.startswith("baseline"):
            steps.append(Step("fit", stage, "bce" if multi_label else "ce"))
        elif cfg.regression.name in ("progressive", "teacher"):
            steps.append(Step("fit", stage, LOSSES[cfg.regression.loss], regressing=True))
        else:
            if i > 0:
                steps.append(Step("regress", f"regress{i}", round=i, last=i == len(stages) - 1))
            steps.append(
                Step(
                    "fit",
                    stage,
                    "eqn",
                    refit=i > 0 and cfg.pipeline.refit_from == "coeqn",
                    artifact=artifact_name(cfg, i) if i > 0 else None,
                )
            )
    return steps


def fit(
    run: "RunContext",
    stage: str,
    dm: EQNDataModule,
    objective: str,
    init_from: Path | None = None,
    uses_artifact: str | None = None,
    regression: Any = None,
    select_from: int = 0,
) -> Path:
    """Train a stage (resuming from its last.ckpt), evaluate it, save checkpoints/<stage>.ckpt and export it; with a
    regression callback, the relabeled training set (the targets of its last epoch) is written before the stage
    is marked done."""
    stage_dir = run.run_dir / "stages" / stage
    final = run.run_dir / "checkpoints" / f"{stage}.ckpt"
    done = stage_dir / "done.json"
    if done.exists() and final.exists():
        log.info("stage %s already finished; skipping", stage)
        run.metrics.update(read_json(done)["metrics"])
        return final
    seed_everything(run.cfg.seed, workers=True)
    module = build_module(dm.spec, run.cfg, objective, stage)
    if init_from is not None:
        state = torch.load(init_from, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    monitor = str(run.cfg.pipeline.monitor)  # a plain string: it is saved in the checkpoint
    checkpoint = OwnedCheckpoint(
        dirpath=stage_dir,
        filename="best",
        monitor=monitor,
        mode=monitor_mode(monitor),
        save_last=True,
        save_top_k=1,
        from_epoch=select_from,
    )
    extra = [instantiate(node) for node in (run.cfg.callbacks or {}).values() if node and "_target_" in node]
    pruning = prune_callback(run.cfg, run.run_dir, stage_plan(run.cfg).index(stage))
    extra += [pruning] if pruning is not None else []
    extra += [regression] if regression is not None else []
    epochs = run.cfg.trainer.max_epochs * (run.cfg.pipeline.rounds + 1 if stage == "baseline_matched" else 1)
    resume = stage_dir / "last.ckpt"
    started = time.perf_counter()
    with StageLogger(run.cfg, run.run_dir, stage) as logger:
        if uses_artifact:
            logger.use_artifact(uses_artifact)
        callbacks = [checkpoint, TrainingState(stage), *extra]
        trainer = run.build_trainer(stage, callbacks, logger.lightning, max_epochs=epochs)
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume.exists() else None, weights_only=True)
        fit_s = time.perf_counter() - started
        # Lightning's trainer <-> module reference cycle would keep the trained weights, gradients and optimizer
        # state alive through evaluation and the next stage (measured: +350 MiB per MiniLM stage)
        del trainer, module
        gc.collect()
        fault_point(f"fit:{stage}:trained")
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else resume
        module = load_module(best)
        metrics = evaluate(run, module, dm, stage)
        metrics[f"time/{stage}_fit_s"] = fit_s
        logger.log_results(stage, metrics, dm.label_names)
        fault_point(f"fit:{stage}:evaluated")
        if run.is_main:
            save_final_checkpoint(module, final)
            fault_point(f"fit:{stage}:saved")
            if run.cfg.pipeline.export:  # export/<stage>/: a Hugging Face-style model folder
                from eqn.model_folder import export

                export(final, run.run_dir / "export" / stage, {**run.metrics, **metrics}, dm.name, overwrite=True)
                fault_point(f"fit:{stage}:exported")
            logger.log_stage_outputs(stage, run.run_dir, dm.split("test").texts)
            if regression is not None:
                write_relabeled(
                    run.run_dir,
                    run.cfg.pipeline,
                    dm,
                    f"{run.cfg.model.name} EQN, regression={run.cfg.regression.name}",
                    run.metrics,
                    regression.how(),
                    fault="progressive",
                )
            write_json(done, {"metrics": metrics, "best_checkpoint": str(best)})
    # the loggers' files of this stage are eqn's too, recorded once the logger has closed them (finalize writes)
    if run.is_main and (run.run_dir / "logs" / stage).is_dir():
        record_tree(run.run_dir / "logs" / stage)
    run.barrier()
    run.metrics.update(metrics)
    return final


def predict(run: "RunContext", module: EQNModule, dm: EQNDataModule, splits: tuple[str, ...]) -> list[torch.Tensor]:
    """The module's scores on these splits, row i = sample i (one or several processes)."""
    loaders = [dm.predict_loader(s) for s in splits]
    return predict_splits(run.predict_trainer(), module, loaders, [len(dm.split(s)) for s in splits], run.run_dir)


def evaluate(run: "RunContext", module: EQNModule, dm: EQNDataModule, stage: str) -> dict[str, float]:
    """Thresholds from val (tuned or fixed), then every decision rule on val and test."""
    splits = ("val", "test")
    scores = dict(zip(splits, predict(run, module, dm, splits)))
    module.fit_thresholds(scores["val"], dm.gold["val"])
    if run.is_main:
        save_tensors(
            run.run_dir / "stages" / stage / "test_scores.safetensors",
            {"scores": scores["test"], "gold": dm.gold["test"], "thresholds": module.thresholds},
            {
                "label_names": dm.label_names,
                "multi_label": dm.multi_label,
                "objective": module.hparams.objective,
                "score_scale": module.score_scale,
                "scale": run.cfg.pipeline.scale,
                "ids": dm.split("test").ids,
            },
        )
    out: dict[str, float] = {}
    for split, s in scores.items():
        m = evaluation.all_rule_metrics(
            s, dm.gold[split], dm.multi_label, module.thresholds, module.score_scale, dm.label_names
        )
        if module.hparams.objective == "eqn":
            m.update(evaluation.intensity_metrics(s, dm.gold[split], run.cfg.pipeline.scale))
        out.update({f"{stage}/{split}/{k}": v for k, v in m.items()})
    return out


def save_final_checkpoint(module: EQNModule, final: Path) -> None:
    """Weights (with the thresholds fitted on val) and hyper-parameters: what annotation needs, no training state."""
    ckpt = {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "hyper_parameters": plain(dict(module.hparams)),
        "pytorch-lightning_version": lightning_version,
    }
    with atomic_path(final) as tmp:
        torch.save(ckpt, tmp)


def regress(run: "RunContext", dm: EQNDataModule, checkpoint: Path, round_: int, last: bool) -> None:
    """Label regression: predict the training set (and val, if asked), keep gold at scale, replace the rest."""
    path = run.run_dir / "stages" / f"regress{round_}" / "targets.safetensors"
    p = run.cfg.pipeline
    splits = ("train", "val") if p.regress_val else ("train",)
    live = {"train": dm.targets, "val": dm.val_targets}
    if path.exists():
        saved, _ = load_tensors(path)
        for split in splits:
            live[split].copy_(saved[split])
        return
    with StageLogger(run.cfg, run.run_dir, f"regress{round_}") as logger:
        started = time.perf_counter()
        module = load_module(checkpoint)
        for split, predicted in zip(splits, predict(run, module, dm, splits)):
            live[split].copy_(regress_targets(dm.gold[split], predicted, p.scale, p.floor, p.clip))
        seconds = time.perf_counter() - started
        run.metrics[f"time/regress{round_}_s"] = seconds
        fault_point(f"regress{round_}:predicted")
        if not run.is_main:
            return
        artifact = path  # what W&B keeps of the round: the relabeled CSV of the last round, else the targets
        if last and p.save_relabeled:
            write_relabeled(
                run.run_dir,
                run.cfg.pipeline,
                dm,
                f"{run.cfg.model.name} CoEQN (export/{checkpoint.stem})",
                run.metrics,
                fault=f"regress{round_}",
            )
            artifact = run.run_dir / "relabeled_train.csv"
        # written last: its presence marks the round as done
        save_tensors(path, {s: live[s] for s in splits}, {"round": round_})
        changed = (dm.targets != dm.gold["train"].float() * p.scale).float().mean().item()
        logger.log_results(
            f"regress{round_}", {f"regress{round_}/seconds": seconds, f"regress{round_}/changed_cells": changed}, []
        )
        logger.log_artifact(artifact, artifact_name(run.cfg, round_), "dataset")
