"""The EQN rules as pure tensor functions: all-labels init and label regression.

`gold` is a boolean (N x C) mask of each sample's gold labels; `targets` are (N x C) intensities.
"""

from __future__ import annotations

import torch

DEFAULT_SCALE = 10.0


def gold_mask(labels: list[list[int]], num_labels: int) -> torch.Tensor:
    """Boolean (N x C) mask with True at every gold label of every sample."""
    mask = torch.zeros(len(labels), num_labels, dtype=torch.bool)
    rows = [i for i, ids in enumerate(labels) for _ in ids]
    cols = [c for ids in labels for c in ids]
    mask[rows, cols] = True
    return mask


def init_targets(gold: torch.Tensor, scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """All-labels init: gold cells = scale, every other cell = 0."""
    return gold.float() * scale


def regress_targets(
    gold: torch.Tensor,
    predictions: torch.Tensor,
    scale: float = DEFAULT_SCALE,
    floor: float = 0.0,
    clip: bool = True,
) -> torch.Tensor:
    """Label regression: non-gold cells take the prediction clipped to [0, scale] (unclipped with clip=False,
    as the authors' script); scores below `floor` become 0; gold cells stay exactly `scale`."""
    if predictions.shape != gold.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} do not match gold {tuple(gold.shape)}")
    if not torch.isfinite(predictions).all():
        raise ValueError("predictions contain NaN or infinite values; refusing to regress targets")
    regressed = predictions.float().clamp(0.0, scale) if clip else predictions.float()
    if floor > 0:
        regressed = torch.where(regressed < floor, torch.zeros_like(regressed), regressed)
    return torch.where(gold, torch.full_like(regressed, scale), regressed)


def alpha_at(epoch: int, start: int, epochs: int, alpha: float, schedule: str = "linear") -> float:
    """Progressive regression: the weight of the model's own predictions in the targets of `epoch` (0-based).
    0 before `start` (there is no prediction yet); `constant`: alpha; `linear`: rising to alpha at the last epoch,
    alpha x (epoch - start + 1) / (epochs - start) (PS-KD's alpha_t = alpha_T x t / T when start = 1)."""
    if epoch < start:
        return 0.0
    if schedule == "constant":
        return float(alpha)
    if schedule == "linear":
        return float(alpha) * min(1.0, (epoch - start + 1) / max(1, epochs - start))
    raise ValueError(f"schedule must be linear or constant, not {schedule!r}")


def mix_targets(
    gold: torch.Tensor,
    initial: torch.Tensor,
    predictions: torch.Tensor,
    alpha: float,
    scale: float = DEFAULT_SCALE,
    floor: float = 0.0,
    clip: bool = True,
) -> torch.Tensor:
    """(1 - alpha) x initial + alpha x the regressed prediction (clipped, floored); gold cells stay exactly scale."""
    regressed = regress_targets(gold, predictions, scale, floor, clip)
    mixed = (1.0 - alpha) * initial.float() + alpha * regressed
    return torch.where(gold, torch.full_like(mixed, scale), mixed)
