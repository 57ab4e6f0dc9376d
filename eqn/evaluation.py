"""Decision rules and metrics.

Scores are per-label intensities: 0..scale for the EQN objective, probabilities for bce/ce. Every objective is
judged by the same rules, side by side:

- `tuned`  (multi-label): per-label thresholds tuned on val, the top label always kept. Tuning is rank-based
  (candidates are the val scores themselves), so it gives the same decisions under any monotone rescaling of
  the scores: it cannot favour one score scale.
- `fixed`  (multi-label): one threshold at the middle of the score range (0.5 for probabilities, scale/2 for
  intensities), the top label always kept.
- `argmax`: the top label only (single-label datasets; the authors' accuracy-only evaluation).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multilabel_exact_match,
    multilabel_f1_score,
)

RULES_MULTI = ("tuned", "fixed", "argmax")
RULES_SINGLE = ("argmax",)


def headline_rule(multi_label: bool) -> str:
    """The rule behind the un-prefixed `<stage>/<split>/<metric>` figures."""
    return "tuned" if multi_label else "argmax"


def rules(multi_label: bool) -> tuple[str, ...]:
    return RULES_MULTI if multi_label else RULES_SINGLE


def top_label(scores: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).bool()


def decide(scores: torch.Tensor, multi_label: bool, thresholds: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (N x C) decisions: argmax (single-label, or no thresholds), else thresholds with the top label kept."""
    top = top_label(scores)
    if not multi_label or thresholds is None:
        return top
    return (scores >= thresholds.to(scores)) | top


def tune_thresholds(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per-label threshold that maximises that label's F1 on these scores, searched over every distinct score.

    The threshold is the lowest score kept as positive (decisions use `>=`), so the result depends only on the
    ranking of the scores. A label without positives gets the largest float (never predicted except as the top
    label; finite, so weights files and JSON stay finite)."""
    scores, gold = scores.float(), gold.bool()
    n, c = scores.shape
    ordered, order = scores.sort(dim=0, descending=True)  # N x C
    hits = gold.gather(0, order).float()
    tp = hits.cumsum(0)  # predicting the top k+1 rows positive
    k = torch.arange(1, n + 1, dtype=torch.float32).unsqueeze(1)
    positives = gold.sum(0).float().unsqueeze(0)
    f1 = 2 * tp / (k + positives).clamp_min(1.0)
    # a cut is only possible where the next score is strictly lower (ties are kept together)
    boundary = torch.ones_like(ordered, dtype=torch.bool)
    boundary[:-1] = ordered[:-1] > ordered[1:]
    f1 = torch.where(boundary, f1, torch.full_like(f1, -1.0))
    best_f1, best = f1.max(0)
    thresholds = ordered.gather(0, best.unsqueeze(0)).squeeze(0)
    return torch.where(
        (positives.squeeze(0) > 0) & (best_f1 > 0), thresholds, torch.full((c,), torch.finfo(torch.float32).max)
    )


def rule_decisions(
    scores: torch.Tensor, multi_label: bool, thresholds: torch.Tensor | None, score_scale: float
) -> dict[str, torch.Tensor]:
    """Decisions under every rule that applies: {'tuned'|'fixed'|'argmax': N x C bool}."""
    out = {"argmax": top_label(scores)}
    if multi_label:
        out["tuned"] = decide(scores, True, thresholds)
        out["fixed"] = decide(scores, True, torch.full((scores.shape[1],), 0.5 * score_scale))
    return out


def classification_metrics(
    pred: torch.Tensor, gold: torch.Tensor, multi_label: bool, label_names: list[str]
) -> dict[str, float]:
    """macro/micro/weighted F1, per-class F1 and accuracy (subset accuracy when multi-label)."""
    c = gold.shape[1]
    if multi_label:
        p, g = pred.int(), gold.int()
        f1 = lambda avg: multilabel_f1_score(p, g, num_labels=c, average=avg, zero_division=0)  # noqa: E731
        accuracy = multilabel_exact_match(p, g, num_labels=c)
    else:
        p, g = pred.int().argmax(1), gold.int().argmax(1)
        f1 = lambda avg: multiclass_f1_score(p, g, num_classes=c, average=avg, zero_division=0)  # noqa: E731
        accuracy = multiclass_accuracy(p, g, num_classes=c, average="micro")
    out = {"f1_macro": f1("macro"), "f1_micro": f1("micro"), "f1_weighted": f1("weighted"), "accuracy": accuracy}
    metrics = {k: float(v) for k, v in out.items()}
    metrics.update({f"f1/{name}": float(v) for name, v in zip(label_names, f1("none"))})
    return metrics


def all_rule_metrics(
    scores: torch.Tensor,
    gold: torch.Tensor,
    multi_label: bool,
    thresholds: torch.Tensor | None,
    score_scale: float,
    label_names: list[str],
) -> dict[str, float]:
    """Headline metrics (un-prefixed) plus `<rule>/<metric>` for every rule; `top1_in_gold` for the argmax rule."""
    decisions = rule_decisions(scores, multi_label, thresholds, score_scale)
    out: dict[str, float] = {}
    for rule, pred in decisions.items():
        m = classification_metrics(pred, gold, multi_label, label_names)
        if rule == headline_rule(multi_label):
            out.update(m)
        out.update({f"{rule}/{k}": v for k, v in m.items() if not k.startswith("f1/")})
    out["argmax/top1_in_gold"] = float(gold.bool()[torch.arange(len(scores)), scores.argmax(1)].float().mean())
    return out


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
