"""One LightningModule for every backbone: backbone -> dropout -> linear head -> objective.

objective 'eqn': no output activation, MSE against the 0..scale intensity targets (CoEQN and EQN stages);
'bce': multi-label classifier baseline; 'ce': single-label classifier baseline.
"""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassF1Score, MultilabelF1Score

from eqn.evaluation import decide

OBJECTIVES = ("eqn", "bce", "ce")


class EQNModule(LightningModule):
    def __init__(self, backbone: dict, label_names: list[str], multi_label: bool, objective: str = "eqn",
                 scale: float = 10.0, head_dropout: float = 0.1, optimizer: dict | None = None,
                 scheduler: dict | None = None, encoder: str | None = None, thresholds: list[float] | None = None,
                 stage: str = "eqn"):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
        if objective == "ce" and multi_label:
            raise ValueError("objective 'ce' is single-label; use 'bce' for a multi-label dataset")
        self.backbone = instantiate(backbone)
        if hasattr(self.backbone, "hf_config"):  # let load_from_checkpoint rebuild the encoder offline
            backbone = {**backbone, "hf_config": self.backbone.hf_config}
        self.save_hyperparameters({"backbone": backbone, "label_names": list(label_names), "multi_label": multi_label,
                                   "objective": objective, "scale": scale, "head_dropout": head_dropout,
                                   "optimizer": optimizer, "scheduler": scheduler, "encoder": encoder, "stage": stage})
        c = len(label_names)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(self.backbone.output_dim, c))
        init = torch.tensor(thresholds, dtype=torch.float32) if thresholds else torch.full((c,), 0.5 * self.score_scale)
        self.register_buffer("thresholds", init)
        f1 = (MultilabelF1Score(num_labels=c, average="macro", zero_division=0) if multi_label
              else MulticlassF1Score(num_classes=c, average="macro", zero_division=0))
        self.val_f1 = f1

    # ------------------------------------------------------------------ scores
    @property
    def score_scale(self) -> float:
        """Scores live in [0, scale] for EQN, [0, 1] for the classifiers."""
        return self.hparams.scale if self.hparams.objective == "eqn" else 1.0

    @property
    def min_length(self) -> int:
        return getattr(self.backbone, "min_length", 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(input_ids, attention_mask))

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.hparams.objective == "bce":
            return torch.sigmoid(outputs)
        if self.hparams.objective == "ce":
            return torch.softmax(outputs, dim=-1)
        return outputs

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        objective = self.hparams.objective
        if objective == "eqn":
            return nn.functional.mse_loss(outputs.float(), batch["targets"])
        if objective == "bce":
            return nn.functional.binary_cross_entropy_with_logits(outputs.float(), batch["gold"].float())
        return nn.functional.cross_entropy(outputs.float(), batch["gold"].float().argmax(1))

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["input_ids"], batch["attention_mask"]), batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"stage '{self.hparams.stage}': training loss became {loss.item()} at step "
                                     f"{self.global_step}; lower the learning rate or check the data")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        n = len(batch["index"])
        self.log("val/loss", self.loss(outputs, {**batch, "targets": batch["gold"].float() * self.hparams.scale}),
                 prog_bar=True, batch_size=n, sync_dist=True)
        scores = self.scores(outputs.float())
        gold = batch["gold"].int()
        if self.hparams.multi_label:
            self.val_f1(decide(scores, True, self.thresholds).int(), gold)
        else:
            self.val_f1(scores.argmax(1), gold.argmax(1))
        self.log("val/f1_macro", self.val_f1, prog_bar=True, batch_size=n)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        return {"index": batch["index"], "scores": self.scores(outputs.float())}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        opt_cfg = dict(self.hparams.optimizer or {"_target_": "torch.optim.AdamW", "lr": 1e-3})
        opt_cfg["_partial_"] = True
        optimizer = instantiate(opt_cfg)(self.parameters())
        sched = dict(self.hparams.scheduler or {"name": "linear"})
        if sched.get("name", "linear") == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(sched.get("warmup_ratio", 0.0) * total)

        def linear(step: int) -> float:  # linear warm-up, then linear decay to 0 (as transformers' schedule)
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
