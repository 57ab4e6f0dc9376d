"""Do the intensities track people's judgements? A check against human-rated sentiment intensity.

    python experiments/bench_intensity.py [--runs outputs/quality] [--vader DIR] [--resamples 1000]
    python experiments/bench_intensity.py --runs outputs/quality/tuned --only seeds \
        --stages baseline,eqn,progressive_mse,... --name intensity_regression   # bench_regression.py's variants

No emotion-intensity ratings can be obtained offline here. The closest human judgements that can: the 4,200
tweets of VADER (Hutto & Gilbert, ICWSM 2014), each rated from -4 (extremely negative) to +4 (extremely
positive) by about 20 people; the mean rating ships in the vaderSentiment sdist on PyPI (MIT licence), which this
script downloads with pip into outputs/cache when --vader is not given (the tweets are not copied into the repo).

A positive label (joy, love, positive, ...) is scored against the mean rating, a negative one (sadness, anger,
fear, negative, ...) against minus the mean rating. Two views:
- intensity: only the tweets of the label's polarity (rating > 0 for joy) - does a stronger tweet get a
  stronger intensity? This is the question an intensity has to answer.
- polarity: every tweet - does the intensity also separate the two polarities?
Every finished grid run under --runs with checkpoints is scored, each stage side by side (baseline: 10 x its
probability; CoEQN; EQN): Spearman r with a 95 % bootstrap interval over tweets (the statistic of
`python -m eqn.validate`, which does the same for any ratings file). Every other stage (EQN, CoEQN, or the
--stages given) is compared with the baseline of the same seed by a paired bootstrap over tweets (the
same resamples for both models, averaged over seeds) and by a t-interval over seeds. Written to
experiments/results/intensity.md and intensity.json.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

ROOT = Path(__file__).resolve().parents[1]
from eqn import load, stats  # noqa: E402
from eqn.io import write_text  # noqa: E402

VADER = "vaderSentiment==3.3.2"
POSITIVE = ("joy", "love", "admiration", "optimism", "positive")
NEGATIVE = ("sadness", "anger", "fear", "disappointment", "negative")
STAGES = ("baseline", "coeqn", "eqn")
NAMES = {"baseline": "baseline", "coeqn": "CoEQN", "eqn": "EQN"}
# word backbones and MiniLM on the datasets whose labels carry a polarity (tfn3's Bullish/Bearish are about
# markets, not the tweets' feelings)
STUDIES = "grid_goemotions_*,grid_emotion6_*,grid_tsa3_*"


def vader_tweets(folder: Path | None) -> pd.DataFrame:
    """(text, rating) of VADER's tweets_GroundTruth.txt, fetched from PyPI into outputs/cache when not given."""
    if folder is None:
        folder = ROOT / "outputs" / "cache" / "vader"
        if not list(folder.rglob("tweets_GroundTruth.txt")):
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    VADER,
                    "-d",
                    str(folder),
                ],
                check=True,
            )
            for sdist in folder.glob("vaderSentiment-*.tar.gz"):
                with tarfile.open(sdist) as outer:
                    outer.extractall(folder, filter="data")
            for inner in folder.rglob("hutto_ICWSM_2014.tar.gz"):
                with tarfile.open(inner) as tar:
                    tar.extractall(inner.parent, filter="data")
    found = sorted(Path(folder).rglob("tweets_GroundTruth.txt"))
    if not found:
        sys.exit(f"bench_intensity: no tweets_GroundTruth.txt under {folder}")
    rows = []
    for line_no, line in enumerate(found[0].read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            sys.exit(f"bench_intensity: {found[0]}:{line_no}: expected id<TAB>rating<TAB>text")
        rows.append((html.unescape(parts[2]).strip(), float(parts[1])))
    return pd.DataFrame(rows, columns=["text", "rating"])


def checkpoint(study: Path, stage: str, seed: int) -> Path:
    """A stage's final model in a study folder: baseline-s<seed>/baseline.ckpt, eqn-s<seed>/{coeqn,eqn}.ckpt, and for
    any other stage (a label-regression variant of bench_regression.py, the matched baseline) <stage>-s<seed>/ with
    the model its pipeline ends with."""
    if stage in STAGES:
        run = "baseline" if stage == "baseline" else "eqn"
        return study / f"{run}-s{seed}" / "checkpoints" / f"{stage}.ckpt"
    final = "baseline_matched" if stage == "baseline_matched" else "eqn"
    return study / f"{stage}-s{seed}" / "checkpoints" / f"{final}.ckpt"


def model_sets(runs: Path, pattern: str, stages: tuple[str, ...] = STAGES) -> dict[str, dict[int, dict[str, Path]]]:
    """{study: {seed: {stage: checkpoint}}} for every seed whose runs kept every stage's checkpoint."""
    out: dict = {}
    for study in sorted(p for pat in pattern.split(",") for p in runs.glob(pat) if p.is_dir()):
        first = checkpoint(study, stages[0], 0).parent.parent.name.rsplit("-s", 1)[0]  # the first stage's run dirs
        for base in sorted(study.glob(f"{first}-s*")):
            seed = int(base.name.rsplit("-s", 1)[1])
            ckpts = {stage: checkpoint(study, stage, seed) for stage in stages}
            if all(p.exists() for p in ckpts.values()):
                out.setdefault(study.name, {})[seed] = ckpts
    return out


def score(study_sets: dict, tweets: pd.DataFrame, resamples: int) -> list[dict]:
    rating = tweets.rating.to_numpy()
    rows = []
    rng = np.random.default_rng(0)  # one stream: each (label, view) draws its own resamples from it
    for study, seeds in study_sets.items():
        intensity: dict = {}  # (seed, stage) -> tweets x labels
        for seed, ckpts in seeds.items():
            stages = list(ckpts)
            for stage, ckpt in ckpts.items():
                annotator = load(str(ckpt))
                intensity[seed, stage] = annotator.intensities(annotator.scores(tweets.text.tolist())).numpy()
                labels = annotator.label_names
        signed = [(lab, 1.0) for lab in labels if lab.lower() in POSITIVE] + [
            (lab, -1.0) for lab in labels if lab.lower() in NEGATIVE
        ]
        for label, sign in signed:
            j = labels.index(label)
            for view in ("intensity", "polarity"):
                mask = (sign * rating > 0) if view == "intensity" else np.ones(len(rating), dtype=bool)
                y = sign * rating[mask]
                idx = rng.integers(0, len(y), size=(resamples, len(y)))
                boot, point = {}, {}
                for seed in seeds:
                    for stage in stages:
                        x = intensity[seed, stage][mask, j]
                        boot[seed, stage] = stats.boot_correlation(x, y, idx, "spearman")
                        point[seed, stage] = float(scipy_stats.spearmanr(x, y).statistic)
                        low, high = stats.interval(boot[seed, stage])
                        rows.append(
                            {
                                "study": study,
                                "label": label,
                                "view": view,
                                "seed": seed,
                                "stage": stage,
                                "n": int(mask.sum()),
                                "spearman": point[seed, stage],
                                "spearman_low": float(low),
                                "spearman_high": float(high),
                            }
                        )
                ref = stages[0]  # the reference: the baseline unless --stages names another first
                for stage in stages[1:]:
                    diffs = [point[s, stage] - point[s, ref] for s in seeds]
                    mean, lo, hi = stats.t_interval(diffs)
                    delta = np.nanmean([boot[s, stage] - boot[s, ref] for s in seeds], axis=0)
                    rows.append(
                        {
                            "study": study,
                            "label": label,
                            "view": view,
                            "seed": "all",
                            "stage": f"{stage}-{ref}",
                            "n": int(mask.sum()),
                            "spearman": mean,
                            "spearman_low": lo,
                            "spearman_high": hi,
                            "boot_low": stats.interval(delta)[0],
                            "boot_high": stats.interval(delta)[1],
                            "p": stats.two_sided_p(delta),
                        }
                    )
    return rows


def fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"


def render(rows: list[dict], study_sets: dict, tweets: pd.DataFrame, seconds: float, command: str) -> str:
    frame = pd.DataFrame(rows)
    lines = [
        "# Intensities against human ratings (VADER tweets)",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min on {platform.machine()}, 2 CPU cores). "
        f"{len(tweets)} tweets, each the mean of about 20 people's ratings from -4 to +4 (Hutto & Gilbert 2014; "
        "vaderSentiment 3.3.2 sdist, MIT). A positive label is scored against the rating, a negative one "
        "against minus the rating. **intensity** view: only the tweets of the label's polarity (does a "
        "stronger tweet get a stronger intensity?); **polarity** view: every tweet. Sentiment of tweets is "
        "a proxy for emotion intensity, not the same judgement: read the differences between stages, not "
        "the absolute r.",
        "",
        "Spearman r (mean ± std over seeds) of each stage's 0–10 intensity (baseline: 10 × probability). "
        "Δ = stage − the first stage (the baseline unless --stages says otherwise), paired: t-interval over seeds; bootstrap over tweets (same resamples for "
        "both models, averaged over seeds) with p. A Δ whose seed interval or bootstrap interval includes 0 "
        "is no significant difference.",
        "",
    ]
    for study, seeds in study_sets.items():
        stages = list(next(iter(seeds.values())))
        names = [NAMES.get(st, st) for st in stages]
        lines += [
            f"## {study} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
            f"{', '.join(str(s) for s in sorted(seeds))})",
            "",
            "| label | view | tweets | "
            + " | ".join(names)
            + " | "
            + " | ".join(f"Δ {n} (seeds; bootstrap, p)" for n in names[1:])
            + " |",
            "|---|---|---|" + "---|" * (2 * len(stages) - 1),
        ]
        part = frame[frame.study == study]
        for (label, view), g in part.groupby(["label", "view"], sort=False):
            per = {st: g[(g.stage == st) & (g.seed != "all")].spearman.astype(float) for st in stages}
            cells = [
                f"{per[st].mean():.3f}" + (f" ± {per[st].std(ddof=1):.3f}" if len(per[st]) > 1 else "") for st in stages
            ]
            deltas = []
            for st in stages[1:]:
                d = g[g.stage == f"{st}-{stages[0]}"].iloc[0]
                seeds_ci = (
                    f"[{fmt(d.spearman_low)}, {fmt(d.spearman_high)}]" if not math.isnan(d.spearman_low) else "one seed"
                )
                sig = (
                    (d.boot_low > 0 or d.boot_high < 0)
                    and d.p < 0.05
                    and (math.isnan(d.spearman_low) or d.spearman_low > 0 or d.spearman_high < 0)
                )
                deltas.append(
                    f"{fmt(d.spearman)} {seeds_ci}; [{fmt(d.boot_low)}, {fmt(d.boot_high)}], "
                    f"p = {d.p:.3f}{'' if sig else ' (n.s.)'}"
                )
            lines.append(f"| {label} | {view} | {int(g.n.iloc[0])} | {' | '.join(cells)} | {' | '.join(deltas)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "outputs" / "quality"))
    parser.add_argument("--only", default=STUDIES, help="comma-separated study globs under --runs")
    parser.add_argument("--vader", type=Path, default=None, help="folder holding tweets_GroundTruth.txt")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="the models compared, baseline first: baseline, coeqn, eqn and any <name> with runs "
        "<name>-s<seed> beside them (bench_regression.py's variants, baseline_matched)",
    )
    parser.add_argument(
        "--name",
        default="intensity",
        help="results file stem under experiments/results (e.g. intensity_tuned for another --runs)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    tweets = vader_tweets(args.vader)
    stages = tuple(s for s in args.stages.split(",") if s)
    if len(stages) < 1:
        sys.exit("bench_intensity: --stages names at least one stage (the first is the reference of the others)")
    study_sets = model_sets(Path(args.runs), args.only, stages)
    if not study_sets:
        sys.exit(f"bench_intensity: no run under {args.runs} kept the checkpoints of every stage of {args.stages}")
    rows = score(study_sets, tweets, args.resamples)
    seconds = time.perf_counter() - started
    runs = Path(args.runs).resolve()
    command = " ".join(
        [
            "python experiments/bench_intensity.py",
            *(
                [f"--runs {runs.relative_to(ROOT) if runs.is_relative_to(ROOT) else runs}"]
                if runs != ROOT / "outputs" / "quality"
                else []
            ),
            *([f"--only '{args.only}'"] if args.only != STUDIES else []),
            *([f"--stages {args.stages}"] if stages != STAGES else []),
            *([f"--name {args.name}"] if args.name != "intensity" else []),
        ]
    )
    results = ROOT / "experiments" / "results"
    write_text(
        results / f"{args.name}.json",
        json.dumps({"command": command, "tweets": len(tweets), "rows": rows}, indent=1, default=float) + "\n",
        own=False,
    )
    path = results / f"{args.name}.md"
    write_text(path, render(rows, study_sets, tweets, seconds, command), own=False)  # the project's results
    print(path.read_text())


if __name__ == "__main__":
    main()
