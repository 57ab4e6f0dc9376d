"""Results table from a run or multirun directory, with paired statistics.

    python -m eqn.report <dir> [out=<dir>] [resamples=1000] [overwrite=true]   (--out <dir> etc. work too)

Collects every metrics.json below <dir> (with the config.yaml beside it) and writes results.md and results.csv:

- test macro-F1 (mean ± std over seeds, n) of baseline / baseline at the EQN pipeline's budget / CoEQN / EQN,
  under every decision rule (per-label tuned thresholds, one fixed threshold, argmax), plus micro, weighted
  F1 and accuracy under the headline rule;
- paired comparisons (EQN vs baseline, CoEQN vs baseline, EQN vs matched-budget baseline): the mean difference
  over seeds with a 95% t-interval, and a paired bootstrap over test rows (decisions saved by each run) with
  its interval and p-value; an interval that includes 0 is printed as "no significant difference";
- per-class F1 differences with bootstrap intervals (results_per_class.csv, and in the markdown).
Runs with a config but no metrics.json are listed as missing or failed, never dropped silently.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from eqn import evaluation, stats

if TYPE_CHECKING:
    import torch
from eqn.errors import ConfigError, DataError
from eqn.io import atomic_path, load_tensors, read_json, write_text
from eqn.ownership import check_writable

STAGES = ("baseline", "baseline_matched", "coeqn", "eqn")
TITLES = {"baseline": "baseline", "baseline_matched": "baseline (EQN budget)", "coeqn": "CoEQN", "eqn": "EQN"}
COMPARISONS = (("eqn", "baseline"), ("coeqn", "baseline"), ("eqn", "baseline_matched"), ("eqn", "coeqn"))
HEADLINE = (
    ("f1_macro", "macro-F1"),
    ("f1_micro", "micro-F1"),
    ("f1_weighted", "weighted F1"),
    ("accuracy", "accuracy"),
)
RULES = (
    ("tuned", "per-label tuned thresholds"),
    ("fixed", "one fixed threshold (0.5 of the score range)"),
    ("argmax", "argmax (the authors' rule)"),
)


def variant(cfg: dict, stage: str) -> str:
    """The stage as the report names it: EQN trained with another label regression is its own column
    (`eqn[progressive-mse]`, `eqn[teacher-bce]`; an ensemble of teachers `eqn[teacher-ensemble-mse]`), compared with
    the baselines like EQN."""
    r = cfg.get("regression") or {}
    if stage == "eqn" and r.get("name", "offline") != "offline":
        kind = "teacher-ensemble" if r["name"] == "teacher" and len(r.get("teachers") or []) > 1 else r["name"]
        return f"eqn[{kind}-{r.get('loss', 'mse')}]"
    return stage


def title(stage: str) -> str:
    return TITLES.get(stage) or stage.replace("eqn[", "EQN [")


def stage_order(stages) -> list[str]:
    known = [s for s in STAGES if s in stages]
    return known + sorted(s for s in stages if s not in STAGES)


def comparison_pairs(stages) -> list[tuple[str, str]]:
    extra = [(s, b) for s in stage_order(stages) if s not in STAGES for b in ("baseline", "baseline_matched", "eqn")]
    return [*COMPARISONS, *extra]


def collect(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, stage): dataset, backbone, pipeline, seed, stage, the test metrics and the scores file."""
    rows, problems = [], []
    run_dirs = {p.parent for p in root.rglob("config.yaml") if ".hydra" not in p.relative_to(root).parts}
    run_dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}  # jobs that died before writing
    run_dirs |= {p.parent.parent.parent for p in root.rglob(".hydra/pending/config.yaml")}  # ... or were refused
    for run_dir in sorted(run_dirs):
        config_path = next(
            (
                p
                for p in (
                    run_dir / "config.yaml",
                    run_dir / ".hydra" / "config.yaml",
                    run_dir / ".hydra" / "pending" / "config.yaml",
                )
                if p.exists()
            )
        )
        try:
            cfg = yaml.safe_load(config_path.read_text())
            ident = dict(
                dataset=cfg["data"]["name"],
                backbone=cfg["model"]["name"],
                pipeline=cfg["pipeline"]["name"],
                seed=cfg["seed"],
                run=str(run_dir.relative_to(root)),
            )
        except Exception as err:  # an unreadable config is reported, not fatal
            problems.append(f"{run_dir}: unreadable config.yaml ({err})")
            continue
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.exists():
            problems.append(
                f"{ident['run']}: no metrics.json ({ident['dataset']} / {ident['backbone']} / "
                f"{ident['pipeline']} / seed {ident['seed']}) - missing or failed"
            )
            continue
        try:
            metrics = read_json(metrics_path)
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            problems.append(
                f"{ident['run']}: unreadable metrics.json ({' '.join(str(err).split())[:120]}) - not counted"
            )
            continue
        for stage in STAGES:
            prefix = f"{stage}/test/"
            if prefix + "f1_macro" not in metrics:
                continue
            values = {
                k[len(prefix) :]: v
                for k, v in metrics.items()
                if k.startswith(prefix) and "/f1/" not in k and not k[len(prefix) :].startswith("f1/")
            }
            scores = run_dir / "stages" / stage / "test_scores.safetensors"
            rows.append(
                {
                    **ident,
                    "stage": variant(cfg, stage),
                    **values,
                    "scores": str(scores) if scores.exists() else None,
                    "fingerprint": fingerprint_of(run_dir),
                }
            )
    frame, duplicates = count_seeds_once(pd.DataFrame(rows))
    return frame, problems + duplicates


def fingerprint_of(run_dir: Path) -> str | None:
    try:
        return read_json(run_dir / "fingerprint.json")["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def count_seeds_once(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per (dataset, backbone, stage, seed): a second run of a seed is named, not counted (the first run
    in path order is kept)."""
    if frame.empty:
        return frame, []
    key = ["dataset", "backbone", "stage", "seed"]
    frame = frame.sort_values("run", kind="stable")
    repeated = frame.duplicated(key, keep="first")
    notes = []
    for _, row in frame[repeated].iterrows():
        kept = frame[(frame[key] == row[key]).all(axis=1)].iloc[0]
        same = row["fingerprint"] is not None and row["fingerprint"] == kept["fingerprint"]
        notes.append(
            f"{row['run']}: {row['stage']} of {row['dataset']} / {row['backbone']} seed {row['seed']} again "
            f"({'same' if same else 'another'} configuration as {kept['run']}); each seed is counted once, "
            f"so this run is not"
        )
    return frame[~repeated].drop(columns="fingerprint").reset_index(drop=True), notes


def fmt(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "–"
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.4f} ± {std:.4f} (n={len(v)})"


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Long table: dataset, backbone, metric, stage -> mean, std, n."""
    columns = ["dataset", "backbone", "metric", "stage", "mean", "std", "n"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    metrics = [
        c for c in frame.columns if c not in ("dataset", "backbone", "pipeline", "seed", "run", "stage", "scores")
    ]
    long = frame.melt(id_vars=["dataset", "backbone", "stage", "seed"], value_vars=metrics, var_name="metric").dropna()
    grouped = long.groupby(["dataset", "backbone", "metric", "stage"])["value"]
    return grouped.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else 0.0, n="count").reset_index()


def headline_decisions(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    tensors, meta = load_tensors(path)
    rule = evaluation.headline_rule(meta["multi_label"])
    pred = evaluation.rule_decisions(
        tensors["scores"], meta["multi_label"], tensors["thresholds"], meta["score_scale"]
    )[rule]
    return pred, tensors["gold"], meta


def compare(frame: pd.DataFrame, a: str, b: str, resamples: int) -> dict | None:
    """Paired comparison of stage a vs stage b on the seeds both have (headline rule, test macro-F1)."""
    left = frame[frame.stage == a].set_index("seed")
    right = frame[frame.stage == b].set_index("seed")
    seeds = sorted(set(left.index) & set(right.index))
    if not seeds:
        return None
    diffs = [float(left.loc[s, "f1_macro"]) - float(right.loc[s, "f1_macro"]) for s in seeds]
    mean, low, high = stats.t_interval(diffs)
    out: dict[str, Any] = {"seeds": len(seeds), "mean": mean, "low": low, "high": high, "boot": None}
    paths = [(left.loc[s, "scores"], right.loc[s, "scores"]) for s in seeds]
    if all(isinstance(x, str) for pair in paths for x in pair):
        try:
            pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
            gold: torch.Tensor | None = None
            names = None
            for pa, pb in paths:
                (da, ga, meta), (db, gb, _) = headline_decisions(pa), headline_decisions(pb)
                if ga.shape != gb.shape or (gold is not None and ga.shape != gold.shape) or not bool((ga == gb).all()):
                    raise DataError(pa, "test rows differ between the compared runs; no paired bootstrap")
                gold, names = ga, meta["label_names"]
                pairs.append((da, db))
            assert gold is not None  # one pair at least: `seeds` is not empty
            out["boot"] = stats.paired_bootstrap(pairs, gold, resamples)
            out["labels"] = names
        except DataError as err:
            out["boot_error"] = str(err)
    out["verdict"] = stats.verdict(low, high, out["boot"]["p"] if out["boot"] else None, title(a), title(b))
    if len(seeds) == 1 and out["boot"]:  # one seed: test-row variation only
        boot = out["boot"]
        out["verdict"] = (
            "no significant difference (test rows; one seed)"
            if boot["p"] >= 0.05
            else f"{title(a) if boot['diff'] > 0 else title(b)} better on test rows (one seed)"
        )
    return out


def interval(low: float, high: float) -> str:
    return "–" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"


def markdown(frame: pd.DataFrame, problems: list[str], comparisons: dict, resamples: int = 1000) -> str:
    lines = ["# EQN results", ""]
    if frame.empty:
        lines += ["No finished runs found.", ""]
    present = stage_order(set(frame.stage)) if not frame.empty else []
    header = "| dataset | backbone | " + " | ".join(title(s) for s in present) + " |"
    rule_line = "|---|---|" + "---|" * len(present)

    def table(metric: str) -> list[str]:
        out = [header, rule_line]
        for (dataset, backbone), group in frame.groupby(["dataset", "backbone"]):
            if metric not in group:
                continue
            cells = [fmt(group.loc[group.stage == s, metric]) for s in present]
            out.append(f"| {dataset} | {backbone} | " + " | ".join(cells) + " |")
        return out + [""]

    if not frame.empty:
        lines += ["Headline rule: per-label thresholds tuned on val for multi-label data, argmax for single-label.", ""]
        for metric, heading in HEADLINE:
            lines += [f"## Test {heading} (headline rule)", "", *table(metric)]
        for rule, heading in RULES:
            if f"{rule}/f1_macro" in frame:
                lines += [f"## Test macro-F1, decision rule: {heading}", "", *table(f"{rule}/f1_macro")]
        lines += [
            "## Paired comparisons (test macro-F1, headline rule)",
            "",
            "Δ = first − second. Seeds: mean of per-seed differences with a 95% t-interval. Bootstrap: "
            f"{resamples:,} paired resamples of the test rows, the difference averaged over seeds, 95% percentile interval "
            "and two-sided p. 'Significant' needs the seed interval to exclude 0 and p < 0.05.",
            "",
            "| dataset | backbone | comparison | seeds | Δ (seeds) | 95% CI (seeds) | Δ (bootstrap) | 95% CI (bootstrap) "
            "| p | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (dataset, backbone, a, b), c in comparisons.items():
            boot = c["boot"]
            bcells = (
                f"{boot['diff']:+.4f} | {interval(boot['low'], boot['high'])} | {boot['p']:.3f}"
                if boot
                else "– | – | –"
            )
            lines.append(
                f"| {dataset} | {backbone} | {title(a)} vs {title(b)} | {c['seeds']} | {c['mean']:+.4f} | "
                f"{interval(c['low'], c['high'])} | {bcells} | {c['verdict']} |"
            )
        lines.append("")
        for (dataset, backbone, a, b), c in comparisons.items():
            if b != "baseline" or not (a == "eqn" or a.startswith("eqn[")) or not c["boot"]:
                continue
            boot = c["boot"]
            lines += [
                f"### Per-class F1, {title(a)} − {title(b)}: {dataset} / {backbone}",
                "",
                "| label | Δ F1 | 95% CI (bootstrap) |",
                "|---|---|---|",
            ]
            order = sorted(range(len(c["labels"])), key=lambda i: -float(boot["per_class"][i]))
            for i in order:
                lines.append(
                    f"| {c['labels'][i]} | {float(boot['per_class'][i]):+.4f} | "
                    f"{interval(float(boot['per_class_low'][i]), float(boot['per_class_high'][i]))} |"
                )
            lines.append("")
    lines += ["## Missing or failed runs", ""]
    lines += [f"- {p}" for p in problems] or ["- none"]
    return "\n".join(lines) + "\n"


def comparisons_of(frame: pd.DataFrame, resamples: int) -> dict:
    out: dict = {}
    if frame.empty:
        return out
    for (dataset, backbone), group in frame.groupby(["dataset", "backbone"]):
        for a, b in comparison_pairs(set(group.stage)):
            c = compare(group, a, b, resamples)
            if c is not None:
                out[(dataset, backbone, a, b)] = c
    return out


def per_class_frame(comparisons: dict) -> pd.DataFrame:
    rows = []
    for (dataset, backbone, a, b), c in comparisons.items():
        if c.get("boot"):
            for i, label in enumerate(c["labels"]):
                rows.append(
                    {
                        "dataset": dataset,
                        "backbone": backbone,
                        "comparison": f"{a}-{b}",
                        "label": label,
                        "delta_f1": float(c["boot"]["per_class"][i]),
                        "low": float(c["boot"]["per_class_low"][i]),
                        "high": float(c["boot"]["per_class_high"][i]),
                    }
                )
    return pd.DataFrame(rows)


OUTPUTS = ("results.md", "results.csv", "results_per_class.csv")


def report(
    root: str | Path, out: str | Path | None = None, resamples: int = 1000, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write results.md / results.csv (and results_per_class.csv) into `out` (default: root). An existing report
    is replaced only with overwrite=True and only if eqn wrote it; a folder with no runs at all is an error."""
    from eqn.ownership import check_output

    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a directory" if root.exists() else "directory not found")
    if resamples < 1:
        raise ConfigError(f"resamples={resamples}: must be at least 1")
    out = Path(out) if out else root
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out}: is a file; give a folder")
    for name in OUTPUTS:
        if (out / name).exists() or (out / name).is_symlink():
            check_output(out / name, overwrite, option="overwrite=true")
    check_writable(out / OUTPUTS[0])
    frame, problems = collect(root)
    if frame.empty and not problems:
        raise DataError(root, "no eqn runs here (no config.yaml with metrics.json below it)")
    comparisons = comparisons_of(frame, resamples)
    md, csv = out / "results.md", out / "results.csv"
    write_text(md, markdown(frame, problems, comparisons, resamples))
    with atomic_path(csv) as tmp:
        summarise(frame).to_csv(tmp, index=False, float_format="%.6f")
    per_class = per_class_frame(comparisons)
    if not per_class.empty:
        with atomic_path(out / "results_per_class.csv") as tmp:
            per_class.to_csv(tmp, index=False, float_format="%.6f")
    return md, csv


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import one_line, parse

    args = parse(
        argv,
        "eqn.report",
        "<run or multirun dir> [out=<folder>] [resamples=1000] [overwrite=true]",
        known=("root", "out", "resamples", "overwrite"),
        required=("root",),
        ints={"resamples": 1},
        bools=("overwrite",),
        positional=("root",),
        doc=__doc__,
    )
    with one_line("eqn.report"):
        md, csv = report(args["root"], args.get("out"), args.get("resamples", 1000), args.get("overwrite", False))
    sys.stdout.write(md.read_text())
    print(f"wrote {md} and {csv}")


if __name__ == "__main__":
    main()
