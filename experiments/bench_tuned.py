"""The tuned comparison: does the baseline-vs-EQN verdict survive tuning every objective at its own best setting?

    python experiments/bench_tuned.py [--out outputs/quality/tuned] [--rounds 4,8,12,16] [--seeds 0,1,2]
    python experiments/bench_tuned.py --report-only

1. Search. One Optuna study per objective — pipeline=baseline (BCE), coeqn, eqn — on full GoEmotions with TextCNN:
   the same space, trial budget and sampler seed (conf/hparams_search/goemotions_textcnn*.yaml), selected on the
   tuned-threshold validation macro-F1 of the pipeline's last stage. The studies grow in rounds (4, 8, 12, 16
   finished trials), every objective in turn, so a stopped run leaves the objectives with equal budgets; each step
   is the same resumable command (`python -m eqn.run -m hparams_search=goemotions_textcnn_<objective>
   hydra.sweeper.n_trials=<n> paths.output_dir=<out>`).
2. Seeds. Each objective at its own best setting (optimization_results.yaml of its study), seeds 0-2:
   `python -m eqn.run <the study's rerun arguments> seed=<s> hydra.run.dir=<out>/seeds/<objective>-s<s>`.
3. Report. `eqn.report <out>/seeds` (paired over seeds and test rows, as the untuned grid) and
   experiments/results/tuned.md with the best settings beside the figures and every command.
The studies' journals are copied to experiments/results/tuned_journals/ whenever tuned.md is written and restored
from there into a fresh --out, so the searches continue across checkouts (commit them with tuned.md).
"""
from __future__ import annotations

import argparse
import functools
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from eqn.io import write_text  # noqa: E402
from eqn.report import report  # noqa: E402

OBJECTIVES = ("baseline", "coeqn", "eqn")
# The studies' Optuna journals are committed here (a few KB each): a fresh checkout continues the searches from them
# (finished trials are kept; run dirs live under --out, outside git).
JOURNALS = ROOT / "experiments" / "results" / "tuned_journals"


def study_name(objective: str) -> str:
    return f"goemotions_textcnn_{objective}"


def journal(out: Path, study: str) -> Path:
    return out / "search" / study / "optuna.journal"


def restore_journals(out: Path, studies: list[str]) -> None:
    """Copy each committed journal into a fresh --out (never over a live one)."""
    import shutil

    for study in studies:
        saved, live = JOURNALS / f"{study}.journal", journal(out, study)
        if saved.exists() and not live.exists():
            live.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(saved, live)
            print(f"restored {live} from {saved}")


def save_journals(out: Path, studies: list[str]) -> None:
    for study in studies:
        if journal(out, study).exists():
            write_text(JOURNALS / f"{study}.journal", journal(out, study).read_text(), own=False)


def names(text: str, known, what: str, script: str) -> list[str]:
    """A comma-separated choice among `known` (the command stops, naming the unknown ones and the choices)."""
    chosen = [n for n in text.split(",") if n]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        sys.exit(f"{script}: unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def sh(args: list[str]) -> int:
    print("$", " ".join(shlex.quote(a) for a in args), flush=True)
    return subprocess.run(args, cwd=ROOT, check=False).returncode


def search(out: Path, objective: str, n_trials: int) -> int:
    return sh([sys.executable, "-m", "eqn.run", "-m", f"hparams_search=goemotions_textcnn_{objective}",
               f"hydra.sweeper.n_trials={n_trials}", f"paths.output_dir={out}"])


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


def seed_args(objective: str, found: dict, seed: int) -> list[str]:
    return ["experiment=goemotions_textcnn_tuning", f"pipeline={objective}", *best_params(found), f"seed={seed}",
            "logger=csv", "pipeline.analyze=false"]


def render(out: Path, seconds: float, rounds: str, seeds: list[int]) -> str:
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    target = int(rounds.split(",")[-1])
    done = [trials_done(out, study_name(o)) for o in OBJECTIVES]
    planned = [out / "seeds" / f"{o}-s{s}" / "metrics.json" for o in OBJECTIVES for s in seeds]
    finished = sum(p.exists() for p in planned)
    status = (f"**in progress**: {', '.join(f'{o} {d}' for o, d in zip(OBJECTIVES, done))} of {target} trials; rerun "
              "the command to continue (no verdict is drawn from a partial search)" if min(done) < target else
              "complete" if finished == len(planned) else
              f"searches complete, **{finished} of {len(planned)} seed runs** finished (rerun the command to "
              "continue; no verdict is drawn before all of them)")
    lines = ["# Tuned comparison: every objective at its own best setting", "",
             "GoEmotions, TextCNN, full data. Written by `python experiments/bench_tuned.py` (resumable; "
             "`--report-only` rewrites this file). Each objective searches the same space with the same budget and "
             "sampler seed (conf/hparams_search/goemotions_textcnn.yaml), selected on tuned-threshold validation "
             f"macro-F1, never on test. Status: {status}.", "", "## Searches", "",
             "| objective | finished trials | best val macro-F1 | best setting | command |", "|---|---|---|---|---|"]
    for objective in OBJECTIVES:
        found = best(out, study_name(objective))
        command = (f"python -m eqn.run -m hparams_search=goemotions_textcnn_{objective} "
                   f"hydra.sweeper.n_trials=<n> paths.output_dir={shown}")
        if found is None:
            lines.append(f"| {objective} | {trials_done(out, study_name(objective))} | – | – | `{command}` |")
            continue
        setting = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                            for k, v in found["best_params"].items())
        lines.append(f"| {objective} | {trials_done(out, study_name(objective))} | {found['best_value']:.4f} | {setting} | "
                     f"`{command}` |")
    lines += ["", "## Each objective at its best, 3 seeds", "",
              *seeds_section(out, "*", f"Runs: `python -m eqn.run <best setting> seed=<s> "
                                       f"hydra.run.dir={shown}/seeds/<objective>-s<s>`; ")]
    return "\n".join(lines) + "\n"


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
    head = old[:min((old.index(h) for h in sections), default=len(old))].rstrip("\n")
    sections[heading] = f"{heading}\n\n{body}"
    parts = [head] if head else []
    parts += [sections[h] for h in KEPT_SECTIONS if h in sections]
    write_text(path, "\n\n".join(parts) + "\n", own=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "quality" / "tuned"))
    parser.add_argument("--rounds", default="4,8,12,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out, seeds = Path(args.out).resolve(), [int(x) for x in args.seeds.split(",")]
    started = time.perf_counter()
    restore_journals(out, [study_name(o) for o in OBJECTIVES])
    if not args.report_only:
        grow(out, {study_name(o): functools.partial(search, out, o) for o in OBJECTIVES}, args.rounds, "bench_tuned")
        for seed in seeds:
            for objective in OBJECTIVES:
                run_once(out / "seeds" / f"{objective}-s{seed}",
                         seed_args(objective, best(out, study_name(objective)), seed))
    save_journals(out, [study_name(o) for o in OBJECTIVES])
    text = render(out, time.perf_counter() - started, args.rounds, seeds)
    write_text(ROOT / "experiments" / "results" / "tuned.md", text, own=False)
    splice_quality(text)
    print(f"wrote {ROOT / 'experiments' / 'results' / 'tuned.md'} and its section of quality.md")


if __name__ == "__main__":
    main()
