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
import sys
import time
from pathlib import Path

from studies import (
    ROOT,
    best,
    best_params,
    grow,
    restore_journals,
    run_once,
    save_journals,
    seeds_section,
    sh,
    splice_quality,
    trials_done,
)

from eqn.io import write_text

OBJECTIVES = ("baseline", "coeqn", "eqn")
# The studies' Optuna journals are committed here (a few KB each): a fresh checkout continues the searches from them
# (finished trials are kept; run dirs live under --out, outside git).
JOURNALS = ROOT / "experiments" / "results" / "tuned_journals"


def study_name(objective: str) -> str:
    return f"goemotions_textcnn_{objective}"


def search(out: Path, objective: str, n_trials: int) -> int:
    return sh(
        [
            sys.executable,
            "-m",
            "eqn.run",
            "-m",
            f"hparams_search=goemotions_textcnn_{objective}",
            f"hydra.sweeper.n_trials={n_trials}",
            f"paths.output_dir={out}",
        ]
    )


def seed_args(objective: str, found: dict, seed: int) -> list[str]:
    return [
        "experiment=goemotions_textcnn_tuning",
        f"pipeline={objective}",
        *best_params(found),
        f"seed={seed}",
        "logger=csv",
        "pipeline.analyze=false",
    ]


def render(out: Path, seconds: float, rounds: str, seeds: list[int]) -> str:
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    target = int(rounds.split(",")[-1])
    done = [trials_done(out, study_name(o)) for o in OBJECTIVES]
    planned = [out / "seeds" / f"{o}-s{s}" / "metrics.json" for o in OBJECTIVES for s in seeds]
    finished = sum(p.exists() for p in planned)
    status = (
        f"**in progress**: {', '.join(f'{o} {d}' for o, d in zip(OBJECTIVES, done))} of {target} trials; rerun "
        "the command to continue (no verdict is drawn from a partial search)"
        if min(done) < target
        else "complete"
        if finished == len(planned)
        else f"searches complete, **{finished} of {len(planned)} seed runs** finished (rerun the command to "
        "continue; no verdict is drawn before all of them)"
    )
    lines = [
        "# Tuned comparison: every objective at its own best setting",
        "",
        "GoEmotions, TextCNN, full data. Written by `python experiments/bench_tuned.py` (resumable; "
        "`--report-only` rewrites this file). Each objective searches the same space with the same budget and "
        "sampler seed (conf/hparams_search/goemotions_textcnn.yaml), selected on tuned-threshold validation "
        f"macro-F1, never on test. Status: {status}.",
        "",
        "## Searches",
        "",
        "| objective | finished trials | best val macro-F1 | best setting | command |",
        "|---|---|---|---|---|",
    ]
    for objective in OBJECTIVES:
        found = best(out, study_name(objective))
        command = (
            f"python -m eqn.run -m hparams_search=goemotions_textcnn_{objective} "
            f"hydra.sweeper.n_trials=<n> paths.output_dir={shown}"
        )
        if found is None:
            lines.append(f"| {objective} | {trials_done(out, study_name(objective))} | – | – | `{command}` |")
            continue
        setting = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in found["best_params"].items()
        )
        lines.append(
            f"| {objective} | {trials_done(out, study_name(objective))} | {found['best_value']:.4f} | {setting} | "
            f"`{command}` |"
        )
    lines += [
        "",
        "## Each objective at its best, 3 seeds",
        "",
        *seeds_section(
            out,
            "*",
            f"Runs: `python -m eqn.run <best setting> seed=<s> hydra.run.dir={shown}/seeds/<objective>-s<s>`; ",
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "quality" / "tuned"))
    parser.add_argument("--rounds", default="4,8,12,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out, seeds = Path(args.out).resolve(), [int(x) for x in args.seeds.split(",")]
    started = time.perf_counter()
    restore_journals(out, [study_name(o) for o in OBJECTIVES], JOURNALS)
    if not args.report_only:
        grow(out, {study_name(o): functools.partial(search, out, o) for o in OBJECTIVES}, args.rounds, "bench_tuned")
        for seed in seeds:
            for objective in OBJECTIVES:
                run_once(
                    out / "seeds" / f"{objective}-s{seed}", seed_args(objective, best(out, study_name(objective)), seed)
                )
    save_journals(out, [study_name(o) for o in OBJECTIVES], JOURNALS)
    text = render(out, time.perf_counter() - started, args.rounds, seeds)
    write_text(ROOT / "experiments" / "results" / "tuned.md", text, own=False)
    splice_quality(text)
    print(f"wrote {ROOT / 'experiments' / 'results' / 'tuned.md'} and its section of quality.md")


if __name__ == "__main__":
    main()
