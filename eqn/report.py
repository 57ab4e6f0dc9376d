"""Results table from a run or multirun directory.

    python -m eqn.report <dir> [--out <dir>]

Collects every metrics.json below <dir> (with the config.yaml beside it) and writes results.md and results.csv:
rows dataset x backbone; columns baseline / CoEQN / EQN test macro-F1 as mean ± std over seeds (n), and
EQN - baseline; then the same for micro-F1 and accuracy. Runs with a config but no metrics.json are listed
as missing or failed, never dropped silently.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

from eqn.io import atomic_path, read_json, write_text

STAGES = ("baseline", "coeqn", "eqn")
METRICS = (("f1_macro", "macro-F1"), ("f1_micro", "micro-F1"), ("accuracy", "accuracy"))


def collect(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, stage): dataset, backbone, pipeline, seed, stage and the test metrics."""
    rows, problems = [], []
    run_dirs = {p.parent for p in root.rglob("config.yaml") if p.parent.name != ".hydra"}
    run_dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}  # jobs that died before writing
    for run_dir in sorted(run_dirs):
        config_path = run_dir / "config.yaml"
        if not config_path.exists():
            config_path = run_dir / ".hydra" / "config.yaml"
        try:
            cfg = yaml.safe_load(config_path.read_text())
            ident = dict(dataset=cfg["data"]["name"], backbone=cfg["model"]["name"], pipeline=cfg["pipeline"]["name"],
                         seed=cfg["seed"], run=str(run_dir.relative_to(root)))
        except Exception as err:  # an unreadable config is reported, not fatal
            problems.append(f"{run_dir}: unreadable config.yaml ({err})")
            continue
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.exists():
            problems.append(f"{ident['run']}: no metrics.json ({ident['dataset']} / {ident['backbone']} / "
                            f"{ident['pipeline']} / seed {ident['seed']}) - missing or failed")
            continue
        metrics = read_json(metrics_path)
        for stage in STAGES:
            if f"{stage}/test/f1_macro" in metrics:
                rows.append({**ident, "stage": stage, **{m: metrics.get(f"{stage}/test/{m}") for m, _ in METRICS}})
    return pd.DataFrame(rows), problems


def fmt(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "–"
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.4f} ± {std:.4f} (n={len(v)})"


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Long table: dataset, backbone, metric, stage -> mean, std, n."""
    if frame.empty:
        return pd.DataFrame(columns=["dataset", "backbone", "metric", "stage", "mean", "std", "n"])
    long = frame.melt(id_vars=["dataset", "backbone", "stage", "seed"], value_vars=[m for m, _ in METRICS],
                      var_name="metric")
    grouped = long.groupby(["dataset", "backbone", "metric", "stage"])["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else 0.0, n="count").reset_index()
    return out


def markdown(frame: pd.DataFrame, problems: list[str]) -> str:
    lines = ["# EQN results", ""]
    if frame.empty:
        lines.append("No finished runs found.")
    for metric, title in METRICS:
        lines += [f"## Test {title}", "", "| dataset | backbone | baseline | CoEQN | EQN | EQN − baseline |",
                  "|---|---|---|---|---|---|"]
        if frame.empty:
            lines.append("")
            continue
        for (dataset, backbone), group in frame.groupby(["dataset", "backbone"]):
            cells = {s: group.loc[group.stage == s, metric] for s in STAGES}
            both = cells["eqn"].dropna().size and cells["baseline"].dropna().size
            delta = (f"{cells['eqn'].mean() - cells['baseline'].mean():+.4f}" if both else "–")
            lines.append(f"| {dataset} | {backbone} | {fmt(cells['baseline'])} | {fmt(cells['coeqn'])} | "
                         f"{fmt(cells['eqn'])} | {delta} |")
        lines.append("")
    lines += ["## Missing or failed runs", ""]
    lines += [f"- {p}" for p in problems] or ["- none"]
    return "\n".join(lines) + "\n"


def report(root: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"eqn.report: {root} is not a directory")
    out = Path(out) if out else root
    frame, problems = collect(root)
    if not frame.empty:
        frame = frame[frame.pipeline.isin(["baseline", "eqn", "coeqn"])]
    md = out / "results.md"
    csv = out / "results.csv"
    write_text(md, markdown(frame, problems))
    with atomic_path(csv) as tmp:
        summarise(frame).to_csv(tmp, index=False, float_format="%.6f")
    return md, csv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="a run or multirun directory")
    parser.add_argument("--out", help="where to write results.md / results.csv (default: root)")
    args = parser.parse_args(argv)
    md, csv = report(args.root, args.out)
    sys.stdout.write(md.read_text())
    print(f"wrote {md} and {csv}")


if __name__ == "__main__":
    main()
