"""Every statistic eqn reports: seed-level t-intervals; bootstrap resamples of rows, percentile intervals and the
two-sided bootstrap p-value; correlations on each resample; the paired bootstrap of macro- and per-class F1."""

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


def resample_rows(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(B x n) row indices of B bootstrap resamples (rows drawn with replacement)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution (resamples with no value left out)."""
    low, high = np.nanpercentile(np.asarray(boot, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def two_sided_p(boot: np.ndarray) -> float:
    """2 x min(P(d <= 0), P(d >= 0)) over a bootstrap distribution of a difference d, within [1/B, 1]."""
    d = np.asarray(boot, dtype=float)
    d = d[~np.isnan(d)]
    if not len(d):
        return math.nan
    p = 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    return max(min(p, 1.0), 1.0 / len(d))


def centred_ranks(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Ranks of a on each resample (rows of idx), centred per row."""
    r = scipy_stats.rankdata(np.asarray(a)[idx], axis=1)
    return r - r.mean(1, keepdims=True)


def boot_correlation(x: np.ndarray, y: np.ndarray, idx: np.ndarray, method: str = "spearman") -> np.ndarray:
    """Pearson or Spearman r of x and y on each resample (rows of idx); nan where one side is constant."""
    if method == "spearman":
        xa, yb = centred_ranks(x, idx), centred_ranks(y, idx)
    else:
        xa, yb = np.asarray(x, dtype=float)[idx], np.asarray(y, dtype=float)[idx]
        xa, yb = xa - xa.mean(1, keepdims=True), yb - yb.mean(1, keepdims=True)
    denom = np.sqrt((xa * xa).sum(1) * (yb * yb).sum(1))
    return np.where(denom > 0, (xa * yb).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


def correlation(x: np.ndarray, y: np.ndarray, method: str = "spearman") -> float:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if method == "spearman":
        a, b = scipy_stats.rankdata(a), scipy_stats.rankdata(b)
    return float(np.corrcoef(a, b)[0, 1])


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


def paired_bootstrap(
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    gold: torch.Tensor,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
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
    return {
        "diff": float(per_class_observed.mean()),
        "low": float(torch.quantile(macro, lo)),
        "high": float(torch.quantile(macro, hi)),
        "p": two_sided_p(macro.numpy()),
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
