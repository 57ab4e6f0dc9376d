"""Decision rules and metrics.

Scores are per-label intensities: 0..scale for the EQN objective, probabilities for bce/ce. `unit` scores are
scores / scale, so one threshold grid serves every objective. Multi-label decisions take every label whose
score passes its threshold and always keep the top label; single-label decisions take the argmax.
"""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multilabel_exact_match,
    multilabel_f1_score,
)


def decide(scores: torch.Tensor, multi_label: bool, thresholds: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (N x C) decisions."""
    top = torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).bool()
    if not multi_label:
        return top
    assert thresholds is not None, "multi-label decisions need thresholds"
    return (scores >= thresholds.to(scores)) | top


def tune_thresholds(scores: torch.Tensor, gold: torch.Tensor, scale: float, steps: int = 101) -> torch.Tensor:
    """Per-label threshold (in score units) that maximises that label's F1 on these scores."""
    grid = torch.linspace(0.0, 1.0, steps, dtype=torch.float32) * scale  # G
    pred = scores.float().unsqueeze(1) >= grid.view(1, -1, 1)  # N x G x C
    gold = gold.bool().unsqueeze(1)
    tp = (pred & gold).sum(0).float()
    fp = (pred & ~gold).sum(0).float()
    fn = (~pred & gold).sum(0).float()
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1.0)  # G x C
    best = f1.argmax(0)  # first (lowest) threshold reaching the best F1
    return grid[best]


def classification_metrics(pred: torch.Tensor, gold: torch.Tensor, multi_label: bool,
                           label_names: list[str]) -> dict[str, float]:
    """macro/micro F1, per-class F1 and accuracy (subset accuracy when multi-label)."""
    c = gold.shape[1]
    if multi_label:
        p, g = pred.int(), gold.int()
        per_class = multilabel_f1_score(p, g, num_labels=c, average="none", zero_division=0)
        out = {
            "f1_macro": multilabel_f1_score(p, g, num_labels=c, average="macro", zero_division=0),
            "f1_micro": multilabel_f1_score(p, g, num_labels=c, average="micro", zero_division=0),
            "accuracy": multilabel_exact_match(p, g, num_labels=c),
        }
    else:
        p, g = pred.int().argmax(1), gold.int().argmax(1)
        per_class = multiclass_f1_score(p, g, num_classes=c, average="none", zero_division=0)
        out = {
            "f1_macro": multiclass_f1_score(p, g, num_classes=c, average="macro", zero_division=0),
            "f1_micro": multiclass_f1_score(p, g, num_classes=c, average="micro", zero_division=0),
            "accuracy": multiclass_accuracy(p, g, num_classes=c, average="micro"),
        }
    metrics = {k: float(v) for k, v in out.items()}
    metrics.update({f"f1/{name}": float(v) for name, v in zip(label_names, per_class)})
    return metrics


def intensity_metrics(scores: torch.Tensor, gold: torch.Tensor, scale: float) -> dict[str, float]:
    """Regression metrics of intensities against the 0/scale gold vector."""
    target = gold.float() * scale
    err = scores.float() - target
    return {
        "mse": float(err.pow(2).mean()),
        "mae": float(err.abs().mean()),
        "gold_mean": float(scores[gold.bool()].float().mean()) if gold.any() else float("nan"),
        "nongold_mean": float(scores[~gold.bool()].float().mean()) if (~gold.bool()).any() else float("nan"),
    }
