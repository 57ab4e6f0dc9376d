"""What the study scripts share (bench_tuned, bench_regression, bench_transfer, bench_quality, bench_annotator,
build_annotator): running eqn commands, Optuna studies read from their journals (committed beside the results so a
fresh checkout continues a search), best settings as overrides, paired seed reports, and quality.md's sections."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from eqn.io import write_text
from eqn.report import report

ROOT = Path(__file__).resolve().parents[1]


def sh(args: list[str]) -> int:
    print("$", " ".join(shlex.quote(a) for a in args), flush=True)
    return subprocess.run(args, cwd=ROOT, check=False).returncode


def names(text: str, known, what: str, script: str) -> list[str]:
    """A comma-separated choice among `known` (the command stops, naming the unknown ones and the choices)."""
    chosen = [n for n in text.split(",") if n]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        sys.exit(f"{script}: unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def journal(out: Path, study: str) -> Path:
    return out / "search" / study / "optuna.journal"


def restore_journals(out: Path, studies: list[str], saved_in: Path) -> None:
    """Copy each committed journal (saved_in/<study>.journal) into a fresh --out (never over a live one)."""
    import shutil

    for study in studies:
        saved, live = saved_in / f"{study}.journal", journal(out, study)
        if saved.exists() and not live.exists():
            live.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(saved, live)
            print(f"restored {live} from {saved}")


def save_journals(out: Path, studies: list[str], saved_in: Path) -> None:
    """Copy each study's live journal to saved_in/<study>.journal (committed beside the results)."""
    for study in studies:
        if journal(out, study).exists():
            write_text(saved_in / f"{study}.journal", journal(out, study).read_text(), own=False)


def load(out: Path, study: str):
    """The Optuna study as its journal holds it (None before the study starts)."""
    if not journal(out, study).exists():
        return None
    import optuna

    from eqn.search import journal_storage

    return optuna.load_study(study_name=study, storage=journal_storage(journal(out, study)))


def best(out: Path, study: str) -> dict | None:
    """The study's best trial: its optimization_results.yaml, else its journal (a restored journal has no yaml until
    the sweep runs again); None before any trial finished."""
    path = out / "search" / study / "optimization_results.yaml"
    if path.exists():
        return yaml.safe_load(path.read_text())
    loaded = load(out, study)
    if loaded is None or not any(t.state.name == "COMPLETE" for t in loaded.trials):
        return None
    return {"best_params": dict(loaded.best_trial.params), "best_value": float(loaded.best_value)}


def trials_done(out: Path, study: str) -> int:
    loaded = load(out, study)
    return 0 if loaded is None else sum(t.state.name in ("COMPLETE", "PRUNED") for t in loaded.trials)


def best_params(found: dict) -> list[str]:
    """A study's best setting as command-line overrides (floats written exactly)."""
    return [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in found["best_params"].items()]


def run_once(run_dir: Path, overrides: list[str], dry: bool = False) -> int:
    """`python -m eqn.run <overrides>` into run_dir unless a run finished there (0 then, and in a dry run, which
    prints the command)."""
    if (run_dir / "metrics.json").exists():
        return 0
    args = [sys.executable, "-m", "eqn.run", *overrides, f"hydra.run.dir={run_dir}"]
    if dry:
        print("$", *args)
        return 0
    return sh(args)


def seeds_section(out: Path, runs: str, intro: str = "", report_dir: Path | None = None) -> list[str]:
    """The paired report over <out>/seeds (written to report_dir, default the seeds folder), once runs matching
    `runs` have finished there."""
    seeds = out / "seeds"
    if not any(seeds.glob(f"{runs}/metrics.json")):
        return ["No run has finished yet."]
    md, _ = report(seeds, out=report_dir, resamples=1000, overwrite=True)
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    return [f"{intro}Table: `python -m eqn.report {shown}/seeds`.", "", md.read_text().split("\n", 1)[1]]


def grow(out: Path, searches: dict[str, Callable[[int], int]], rounds: str, script: str) -> None:
    """Grow every study (name -> command for n trials) to each round's trial count in turn, so that a stopped run
    leaves them with equal budgets; a search that fails stops the script, saying how to continue."""
    for n in [int(x) for x in rounds.split(",")]:
        for study, search_to in searches.items():
            if trials_done(out, study) < n and search_to(n) != 0:
                sys.exit(f"{script}: the {study} search stopped; rerun this command to continue it")


TUNED_SECTION = "## tuned: every objective at its own best setting"
REGRESSION_SECTION = "## regression: label regression done differently, each variant at its own best"
TRANSFER_SECTION = "## transfer: the best label-regression variant on other backbones and other datasets"
# quality.md's sections written by bench_tuned.py, bench_regression.py and bench_transfer.py, in this order at the end
# of the file; bench_quality.py keeps them when it rewrites the rest
KEPT_SECTIONS = (TUNED_SECTION, REGRESSION_SECTION, TRANSFER_SECTION)


def kept_sections(text: str) -> dict[str, str]:
    """{heading: section} for the KEPT_SECTIONS found in a quality.md (each up to the next one or the end)."""
    found = sorted((text.index(h), h) for h in KEPT_SECTIONS if h in text)
    ends = [start for start, _ in found[1:]] + [len(text)]
    return {h: text[start:end].rstrip("\n") for (start, h), end in zip(found, ends)}


def splice_quality(text: str, heading: str = TUNED_SECTION) -> None:
    """quality.md's section `heading`: a results file (tuned.md, regression.md) with its headings one level down;
    the other kept sections stay as they are."""
    path = ROOT / "experiments" / "results" / "quality.md"
    body = text.split("\n", 1)[1].replace("\n## ", "\n### ").strip("\n")
    old = path.read_text() if path.exists() else ""
    sections = kept_sections(old)
    head = old[: min((old.index(h) for h in sections), default=len(old))].rstrip("\n")
    sections[heading] = f"{heading}\n\n{body}"
    parts = [head] if head else []
    parts += [sections[h] for h in KEPT_SECTIONS if h in sections]
    write_text(path, "\n\n".join(parts) + "\n", own=False)
