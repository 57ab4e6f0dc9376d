"""Paired statistics for comparing two models on the same test rows: seed-level t-intervals and a paired
bootstrap over test examples (macro-F1 and per-class F1 recomputed on each resample)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as scipy_stats


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t interval (nan bounds with one pair)."""
    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def resample_weights(n: int, resamples: int, seed: int = 0) -> torch.Tensor:
    """(B x n) multiplicities of each test row in B bootstrap resamples."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32))


def per_class_f1(weights: torch.Tensor, pred: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """(B x C) per-class F1 on each weighted resample (zero division -> 0)."""
    p, g = pred.float(), gold.float()
    tp = weights @ (p * g)
    fp = weights @ (p * (1 - g))
    fn = weights @ ((1 - p) * g)
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.zeros_like(tp))


def paired_bootstrap(pairs: list[tuple[torch.Tensor, torch.Tensor]], gold: torch.Tensor, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap over test rows for decisions of model A vs model B (one pair per training seed, all on
    the same rows). On each resample the macro-F1 difference A - B is averaged over the pairs.

    Returns the observed difference, its percentile interval, the two-sided p-value
    2 * min(P(diff <= 0), P(diff >= 0)) (at least 1/B), and the same observed/interval per class."""
    weights = resample_weights(len(gold), resamples, seed)
    ones = torch.ones(1, len(gold))
    deltas, observed = [], []
    for a, b in pairs:
        deltas.append(per_class_f1(weights, a, gold) - per_class_f1(weights, b, gold))
        observed.append(per_class_f1(ones, a, gold) - per_class_f1(ones, b, gold))
    per_class = torch.stack(deltas).mean(0)  # B x C
    per_class_observed = torch.stack(observed).mean(0)[0]  # C
    macro = per_class.mean(1)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    p = 2 * min(float((macro <= 0).float().mean()), float((macro >= 0).float().mean()))
    return {
        "diff": float(per_class_observed.mean()),
        "low": float(torch.quantile(macro, lo)),
        "high": float(torch.quantile(macro, hi)),
        "p": max(min(p, 1.0), 1.0 / resamples),
        "per_class": per_class_observed,
        "per_class_low": torch.quantile(per_class, lo, dim=0),
        "per_class_high": torch.quantile(per_class, hi, dim=0),
    }


def verdict(low: float, high: float, p: float | None, a: str, b: str, alpha: float = 0.05) -> str:
    """Plain words: significant only when the seed interval excludes 0 and the bootstrap agrees."""
    if math.isnan(low) or math.isnan(high):
        return "one seed: no interval"
    if low <= 0 <= high or (p is not None and p >= alpha):
        return "no significant difference"
    return f"{a} better" if low > 0 else f"{b} better"
