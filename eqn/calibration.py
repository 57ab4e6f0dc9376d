"""Calibration of a multi-label classifier's probabilities: per-label expected calibration error (ECE) and
temperature scaling fitted on validation, folded into the head so that a calibrated model is a plain model.
Temperature scaling is monotone per label: with each threshold moved the same way, the labels that pass their
thresholds stay the same. One temperature for all labels also keeps the labels' order in every row (so the top label
and the printed order of `emotions`: every decision exactly); one per label fits each label better but may reorder
labels whose scores are close. Only the probabilities, and so the 0-10 intensities, change."""

from __future__ import annotations

import torch


def ece(probs: torch.Tensor, gold: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """Per label: sum over equal-width probability bins of (share of rows in the bin) x |mean probability - share of
    positives in the bin|."""
    probs, gold = probs.double(), gold.double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.double)
    which = torch.bucketize(probs.clamp(0, 1), edges[1:-1], right=True)  # 0..bins-1
    out = torch.zeros(probs.shape[1], dtype=torch.double)
    for b in range(bins):
        mask = (which == b).double()
        count = mask.sum(0)
        gap = ((probs * mask).sum(0) - (gold * mask).sum(0)).abs()  # count x |mean p - mean y|
        out += torch.where(count > 0, gap, torch.zeros_like(gap))
    return (out / probs.shape[0]).float()


def fit_temperature(logits: torch.Tensor, gold: torch.Tensor, per_label: bool = True, steps: int = 200) -> torch.Tensor:
    """The temperature (one per label, or one shared) minimising the binary cross-entropy of sigmoid(logits / T) on
    these rows (validation), optimised over log T with L-BFGS; T > 1 softens overconfident probabilities. Returns one
    value per label either way."""
    logits, gold = logits.detach().double(), gold.detach().double()
    log_t = torch.zeros(logits.shape[1] if per_label else 1, dtype=torch.double, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits / log_t.exp(), gold, reduction="sum")
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().exp().float().expand(logits.shape[1]).clone()


@torch.no_grad()
def fold_temperature(module, temperature: torch.Tensor) -> None:
    """Make a BCE module output logits / T (its head's weights and bias divided by T) and move its thresholds so that
    every decision stays the same: p -> sigmoid(logit(p) / T)."""
    if module.hparams.objective not in ("bce", "soft_bce"):
        raise ValueError(
            f"temperature scaling applies to sigmoid classifiers, not objective {module.hparams.objective!r}"
        )
    t = temperature.to(module.head[-1].weight.dtype)
    module.head[-1].weight.div_(t.unsqueeze(1))
    module.head[-1].bias.div_(t)
    p = module.thresholds.clamp(1e-7, 1 - 1e-7)
    module.thresholds.copy_(torch.sigmoid(torch.logit(p) / t))
