"""Whole-split prediction through `trainer.predict`, reassembled by sample index."""
from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader


def predict_scores(trainer: Trainer, module: LightningModule, loader: DataLoader, n: int) -> torch.Tensor:
    """(n x C) scores, row i = sample i, whatever order (or duplication) the loader used."""
    outputs = trainer.predict(module, dataloaders=loader, return_predictions=True)
    index = torch.cat([o["index"] for o in outputs]).cpu()
    scores = torch.cat([o["scores"] for o in outputs]).float().cpu()
    result = torch.full((n, scores.shape[1]), float("nan"))
    result[index] = scores
    missing = torch.isnan(result).any(1).sum().item()
    if missing:
        raise RuntimeError(f"prediction is missing {missing} of {n} rows")
    return result
