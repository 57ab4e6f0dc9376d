"""eqn's own Lightning callbacks: the training state a resumed stage needs to repeat the uninterrupted one, and the
pruning reports of a search trial. (Kept apart so that the command-line front ends load without Lightning.)"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback

from eqn.interrupt import fault_point
from eqn.io import write_json
from eqn.search import Pruned, journal_storage, make_pruner


class TrainingState(Callback):
    """Stores torch's RNG state in every checkpoint and restores it on resume (dropout masks then repeat), and
    hosts the in-training fault points."""

    def __init__(self, stage: str):
        self.stage = stage

    def state_dict(self) -> dict:
        return {"torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 1:
            fault_point(f"fit:{self.stage}:epoch{trainer.current_epoch}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            fault_point(f"fit:{self.stage}:val{trainer.current_epoch}")


class PruneTrial(Callback):
    """Reports each validation epoch's figure (the objective's metric, e.g. val/f1_macro) to the trial and stops
    the run when the pruner says so. Steps count epochs across the pipeline's stages (`offset` = epochs before)."""

    def __init__(
        self,
        journal: str,
        study: str,
        trial_id: int,
        metric: str,
        run_dir: Path,
        offset: int = 0,
        pruner: dict | None = None,
    ):
        self.journal, self.study_name, self.trial_id = journal, study, trial_id
        self.metric, self.run_dir, self.offset = metric, Path(run_dir), offset
        self.pruner = pruner or {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}
        self._trial = None

    def trial(self):
        if self._trial is None:
            import optuna

            study = optuna.load_study(
                study_name=self.study_name, storage=journal_storage(self.journal), pruner=make_pruner(self.pruner)
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        step = self.offset + trainer.current_epoch
        trial = self.trial()
        trial.report(value, step)
        if trial.should_prune():
            write_json(self.run_dir / "pruned.json", {"step": step, self.metric: value})
            raise Pruned(f"trial pruned at epoch step {step} ({self.metric}={value:.4f})")


def prune_callback(cfg, run_dir: Path, stage_index: int) -> PruneTrial | None:
    s = cfg.get("search")
    if not s or s.get("trial_id") is None or s.pruner == "none":
        return None
    metric = "/".join(str(s.metric).split("/")[1:])  # <stage>/val/f1_macro -> val/f1_macro
    pruner = {"name": s.pruner, "n_startup_trials": s.pruner_startup_trials, "n_warmup_steps": s.pruner_warmup_steps}
    return PruneTrial(
        s.journal, s.study, int(s.trial_id), metric, run_dir, stage_index * int(cfg.trainer.max_epochs), pruner
    )
