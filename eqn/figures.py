"""A finished run's figures: label correlations, per-class F1, intensity distributions, micro-emotion counts (the
command line is eqn/analyze.py).

Writes into <run dir>/analysis/: correlation.csv + correlation.png (label x label Pearson correlation of
predicted test intensities), per_class_f1.png (+ .csv), intensity_distribution.png, micro_emotions.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from eqn.io import atomic_path, load_tensors, read_json, write_json  # noqa: E402

log = logging.getLogger(__name__)
STAGES = ("baseline", "coeqn", "eqn")
LEVELS = (1.0, 3.0, 5.0)


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def correlation(scores: torch.Tensor) -> np.ndarray:
    """Pearson correlation between labels over texts; a constant column correlates 0 (1 with itself)."""
    x = scores.double().numpy()
    x = x - x.mean(0, keepdims=True)
    norm = np.sqrt((x * x).sum(0))
    safe = np.where(norm > 0, norm, 1.0)
    corr = (x.T @ x) / np.outer(safe, safe)
    corr[norm == 0, :] = 0.0
    corr[:, norm == 0] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def plot_heatmap(corr: np.ndarray, names: list[str], path: Path, title: str) -> None:
    size = max(6.0, 0.32 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    save_figure(fig, path)


def micro_emotion_stats(scores: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """How many non-gold labels per text get an intensity above 1, 3 and 5."""
    nongold = scores.masked_fill(gold.bool(), float("-inf"))
    out = {}
    for level in LEVELS:
        counts = (nongold > level).sum(1).double()
        out[f"nongold_above_{level:g}/mean"] = float(counts.mean())
        out[f"nongold_above_{level:g}/share_of_texts"] = float((counts > 0).double().mean())
    return out


def plot_distribution(scores: torch.Tensor, gold: torch.Tensor, scale: float, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(min(0.0, float(scores.min())), max(scale, float(scores.max())), 41).tolist()
    ax.hist(scores[~gold.bool()].numpy(), bins=bins, alpha=0.6, density=True, label="non-gold cells")
    ax.hist(scores[gold.bool()].numpy(), bins=bins, alpha=0.6, density=True, label="gold cells")
    ax.set_xlabel("predicted intensity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


def per_class_f1(metrics: dict[str, float], names: list[str]) -> pd.DataFrame:
    columns = {
        stage: [metrics.get(f"{stage}/test/f1/{n}") for n in names]
        for stage in STAGES
        if f"{stage}/test/f1_macro" in metrics
    }
    return pd.DataFrame(columns, index=names)


def plot_per_class(frame: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(frame) + 2), 4.5))
    width = 0.8 / max(1, frame.shape[1])
    x = np.arange(len(frame))
    for i, stage in enumerate(frame.columns):
        ax.bar(x + i * width, frame[stage].astype(float).fillna(0).values, width, label=stage)
    ax.set_xticks(x + width * (frame.shape[1] - 1) / 2, frame.index, rotation=90)
    ax.set_ylabel("test F1")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("per-class F1")
    save_figure(fig, path)


def stage_figures(run_dir: Path, stage: str) -> tuple[dict, np.ndarray, torch.Tensor, torch.Tensor, list, torch.Tensor]:
    """One stage's figures under analysis/<stage>/ from its saved test scores: (paths, correlation, scores, gold,
    label names, thresholds)."""
    saved, meta = load_tensors(run_dir / "stages" / stage / "test_scores.safetensors")
    scores, gold, names = saved["scores"], saved["gold"], meta["label_names"]
    out = run_dir / "analysis" / stage
    out.mkdir(parents=True, exist_ok=True)
    corr = correlation(scores)
    paths = {
        "label_correlation": out / "correlation.png",
        "intensity_distribution": out / "intensity_distribution.png",
        "per_class_f1": out / "per_class_f1.png",
    }
    plot_heatmap(corr, names, paths["label_correlation"], f"{stage} test scores: label correlation")
    plot_distribution(scores, gold, meta["score_scale"], paths["intensity_distribution"], f"{stage} test scores")
    from eqn.evaluation import classification_metrics, decide

    f1 = classification_metrics(
        decide(scores, meta["multi_label"], saved["thresholds"]), gold, meta["multi_label"], names
    )
    plot_per_class(pd.DataFrame({stage: [f1[f"f1/{n}"] for n in names]}, index=names), paths["per_class_f1"])
    return paths, corr, scores, gold, names, saved["thresholds"]


def analyze_run(run_dir: str | Path, others: Sequence[str | Path] = (), metrics: dict | None = None) -> dict:
    """`metrics`: this run's metrics when its metrics.json is not written yet (the pipeline analyses first)."""
    run_dir = Path(run_dir)
    out = run_dir / "analysis"
    out.mkdir(exist_ok=True)
    collected: dict = {}
    for d in [*others, run_dir]:  # this run's values win
        if (Path(d) / "metrics.json").exists():
            values = read_json(Path(d) / "metrics.json")
            if not isinstance(values, dict):
                from eqn.errors import DataError

                raise DataError(
                    Path(d) / "metrics.json",
                    f"is a JSON {type(values).__name__}, not eqn's metrics (an object of metric names and values)",
                )
            collected.update(values)
    metrics = {**collected, **(metrics or {})}
    stage = next((s for s in ("eqn", "coeqn") if (run_dir / "stages" / s / "test_scores.safetensors").exists()), None)
    summary: dict = {"run_dir": str(run_dir)}
    if stage is not None:
        saved, meta = load_tensors(run_dir / "stages" / stage / "test_scores.safetensors")
        scores, gold, names = saved["scores"], saved["gold"], meta["label_names"]
        corr = correlation(scores)
        frame = pd.DataFrame(corr, index=names, columns=names)
        with atomic_path(out / "correlation.csv") as tmp:
            frame.to_csv(tmp, float_format="%.4f")
        plot_heatmap(corr, names, out / "correlation.png", f"{stage.upper()} test intensities: label correlation")
        plot_distribution(
            scores, gold, meta["scale"], out / "intensity_distribution.png", f"{stage.upper()} test intensities"
        )
        summary["micro_emotions"] = micro_emotion_stats(scores, gold)
        summary["stage"] = stage
        f1 = per_class_f1(metrics, names)
        if not f1.empty:
            with atomic_path(out / "per_class_f1.csv") as tmp:
                f1.to_csv(tmp, float_format="%.4f")
            plot_per_class(f1, out / "per_class_f1.png")
    write_json(out / "micro_emotions.json", summary)
    log.info("analysis written to %s", out)
    return summary
