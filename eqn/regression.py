"""Label regression inside a training: a Lightning callback that owns the updates of the data module's live N x C
training targets (gold cells stay exactly `scale`, the others are clipped to [0, scale], `pipeline.floor` as in
the offline round between two trainings, stages.regress).

`ProgressiveRegression` (regression=progressive): the model's intensities for every training row are collected from
the epoch's own training batches (no extra pass over the data); at the start of epoch t >= `start` the targets
become (1 - alpha_t) x initial + alpha_t x those predictions (targets.mix_targets, alpha_t from targets.alpha_at).
The predictions are part of every checkpoint, so a run killed inside an epoch resumes to the same targets.
"""

from __future__ import annotations

from typing import Sequence

import torch
from lightning.pytorch import Callback

from eqn.targets import alpha_at, mix_targets

LOSSES = {"mse": "eqn", "bce": "soft_bce", "ce": "soft_ce"}  # regression.loss -> the module's objective


class ProgressiveRegression(Callback):
    def __init__(
        self,
        targets: torch.Tensor,
        gold: torch.Tensor,
        scale: float,
        floor: float,
        clip: bool,
        alpha: float,
        start: int,
        epochs: int,
        schedule: str = "linear",
    ):
        self.targets, self.gold = targets, gold  # `targets` is the data module's live tensor: updated in place
        self.initial = targets.clone()
        self.predictions = torch.full_like(targets, float("nan"))
        self.scale, self.floor, self.clip = scale, floor, clip
        self.alpha, self.start, self.epochs, self.schedule = alpha, start, epochs, schedule
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(outputs, dict) and "intensities" in outputs:
            self.predictions[batch["index"].cpu()] = outputs["intensities"].float().cpu()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        alpha = alpha_at(epoch, self.start, self.epochs, self.alpha, self.schedule)
        if alpha == 0.0:
            return
        seen = ~torch.isnan(self.predictions).any(1)  # rows the previous epochs trained on (a row cap may skip some)
        before = self.targets.clone()
        mixed = mix_targets(
            self.gold[seen], self.initial[seen], self.predictions[seen], alpha, self.scale, self.floor, self.clip
        )
        self.targets[seen] = mixed
        changed = float((self.targets != before).float().mean())
        self.history.append({"epoch": epoch, "alpha": alpha, "changed_cells": changed})
        pl_module.log_dict(
            {"regression/alpha": alpha, "regression/changed_cells": changed}, on_epoch=True, on_step=False
        )

    def state_dict(self) -> dict:
        return {"predictions": self.predictions.clone(), "targets": self.targets.clone(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the predictions gathered so far and the targets in use (a run resumed after its last epoch still
        knows the targets it trained on)."""
        for key in ("predictions", "targets"):
            if key in state and state[key].shape == self.targets.shape:
                getattr(self, key).copy_(state[key])
        self.history = list(state.get("history", []))

    def how(self) -> str:
        """How the targets were made, for the relabeled dataset's card."""
        return (
            f"(1 - alpha) x its all-labels target (0) + alpha x {self.source()}, clipped to [0, {{scale:g}}], "
            f"alpha = {self.alpha:g} at the end"
        )

    def source(self) -> str:
        return "the model's own prediction of the epoch before (progressive label regression)"


class TeacherRegression(ProgressiveRegression):
    """regression=teacher: the predictions are the teachers' intensities, fixed before training."""

    def __init__(self, teacher: torch.Tensor, *args, teachers: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.predictions.copy_(teacher)
        self.teachers = list(teachers)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        return  # the teachers' predictions do not change

    def source(self) -> str:
        return f"the mean intensity of the teacher models {self.teachers}"


def regression_callback(run, dm) -> ProgressiveRegression:
    """regression=progressive|teacher for this run: the callback over the data module's live training targets."""
    p, r = run.cfg.pipeline, run.cfg.regression
    args = (
        dm.targets,
        dm.gold["train"],
        p.scale,
        p.floor,
        p.clip,
        r.alpha,
        r.start,
        int(run.cfg.trainer.max_epochs),
        r.schedule,
    )
    if r.name == "teacher":
        return TeacherRegression(teacher_targets(run, dm), *args, teachers=list(r.teachers))
    return ProgressiveRegression(*args)


def teacher_targets(run, dm) -> torch.Tensor:
    """The teachers' intensities for the training rows, computed once (stages/teacher/targets.safetensors)."""
    from eqn.interrupt import fault_point
    from eqn.io import load_tensors, save_tensors

    path = run.run_dir / "stages" / "teacher" / "targets.safetensors"
    if path.exists():
        return load_tensors(path)[0]["train"]
    teachers = list(run.cfg.regression.teachers)
    teacher = teacher_intensities(teachers, dm.split("train").texts, dm.label_names, run.cfg.pipeline.scale)
    if run.is_main:
        save_tensors(path, {"train": teacher.float()}, {"teachers": teachers})
    fault_point("teacher:predicted")
    return torch.as_tensor(teacher)


def teacher_intensities(paths: list[str], texts: list[str], label_names: list[str], scale: float) -> torch.Tensor:
    """The mean 0..scale intensity that the teacher models give each text, each scored with its own tokenizer (a
    classifier's intensity is scale x probability). A teacher with other labels is refused, naming it."""
    from eqn.errors import ConfigError
    from eqn.inference import Annotator

    total = torch.zeros(0)
    for i, path in enumerate(paths):
        teacher = Annotator.from_checkpoint(path)
        if list(teacher.label_names) != list(label_names):
            raise ConfigError(
                f"regression.teachers: {path}: its labels {list(teacher.label_names)[:6]}... are not this "
                f"dataset's {list(label_names)[:6]}... (same labels, same order needed)"
            )
        intensity = teacher.intensities(teacher.scores(texts)) * (scale / float(teacher.module.hparams.scale))
        total = intensity if i == 0 else total + intensity
    return total / len(paths)
