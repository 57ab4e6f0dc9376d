"""Label regression done differently (issue 22), every variant at its own best alpha and start, against the tuned
baseline: does any variant beat it?

    python experiments/bench_regression.py [--out outputs/quality/tuned] [--rounds 4,8] [--seeds 0,1,2]
                                           [--variants progressive_mse,...] [--dry-run]
    python experiments/bench_regression.py --searches-only   # only grow the searches (saves their journals)
    python experiments/bench_regression.py --report-only

It continues bench_tuned.py (same --out) and needs its searches finished (their committed journals are restored into
a fresh --out; its seed runs are remade there when missing): the variants start from the tuned settings (a variant that trains with MSE on 0-10 targets from EQN's best setting, one that trains with
BCE on targets / 10 from the baseline's: each loss from the objective tuned with it), the teachers are the tuned
baseline's own seed runs, and the comparisons are paired with the tuned seed runs of the same seeds.
1. Search. Each variant's alpha and start epoch with the same budget (8 trials, sampler seed 0, median pruner;
   conf/hparams_search/regression_{progressive,teacher}_goemotions_textcnn.yaml), grown in equal rounds:
   `python -m eqn.run -m hparams_search=regression_<kind>_goemotions_textcnn <tuned setting> <variant>
   hydra.sweeper.study_name=regression_<variant>_goemotions_textcnn hydra.sweeper.n_trials=<n>
   paths.output_dir=<out>` (the teacher of the search's seed 0 is the tuned baseline of seed 0).
2. Seeds. Each variant at its best (best search score first, so that a study stopped early has the seeds of its best
   variants), seeds 0-2, as <out>/seeds/<variant>-s<seed> (the teacher of seed s is the
   tuned baseline of seed s; the ensemble is all three), and the baseline at the EQN pipeline's budget
   (pipeline.budget=matched) at the baseline's best, as <out>/seeds/baseline_matched-s<seed>.
3. Report. `python -m eqn.report <out>/seeds` (every variant, the tuned baseline, matched baseline, offline EQN, and
   CoEQN where bench_tuned.py's runs are there; paired over seeds and over test rows) to
   experiments/results/regression.md with every command, and as its section of quality.md.
Budgets: progressive regression mixes in the scores of each epoch's own training batches (no extra pass: one
training, at most the baseline's budget); a teacher variant costs the teacher's training plus its own (the EQN pipeline's
budget), so it is also paired with the matched-budget baseline.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import bench_tuned as tuned
import studies

ROOT = studies.ROOT
from eqn.io import write_text  # noqa: E402

TUNED_TRIALS = 16  # bench_tuned.py's budget per objective
PLANNED, ROUNDS = 8, "4,8"  # the presets' trials per variant, grown in these equal rounds
# variant -> (preset kind, tuned objective its setting comes from, extra overrides; {teacher} / {ensemble} are filled)
VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "progressive_mse": ("progressive", "eqn", []),
    "progressive_bce": ("progressive", "baseline", ["regression.loss=bce"]),
    "teacher_mse": ("teacher", "eqn", ["regression.teachers=[{teacher}]"]),
    "teacher_bce": ("teacher", "baseline", ["regression.teachers=[{teacher}]", "regression.loss=bce"]),
    "teacher_ensemble_mse": ("teacher", "eqn", ["regression.teachers=[{ensemble}]"]),
}


def study_name(variant: str) -> str:
    return f"regression_{variant}_goemotions_textcnn"


def teacher(out: Path, seed: int) -> Path:
    return out / "seeds" / f"baseline-s{seed}" / "checkpoints" / "baseline.ckpt"


def variant_args(out: Path, variant: str, seeds: list[int], seed: int) -> list[str]:
    """The variant's overrides on top of its objective's tuned setting (teachers for `seed`)."""
    _, objective, extra = VARIANTS[variant]
    found = studies.best(out, tuned.study_name(objective))
    fill = {"teacher": str(teacher(out, seed)), "ensemble": ",".join(str(teacher(out, s)) for s in seeds)}
    return [*studies.best_params(found), *(e.format(**fill) for e in extra)]


def missing_inputs(out: Path) -> list[str]:
    """The searches of bench_tuned.py that have not finished yet (this study starts from their settings)."""
    return [
        f"the {o} search ({studies.trials_done(out, tuned.study_name(o))} of {TUNED_TRIALS} trials)"
        for o in ("baseline", "eqn")
        if studies.trials_done(out, tuned.study_name(o)) < TUNED_TRIALS
    ]


def search(out: Path, variant: str, n_trials: int, seeds: list[int], dry: bool) -> int:
    kind = VARIANTS[variant][0]
    args = [
        sys.executable,
        "-m",
        "eqn.run",
        "-m",
        f"hparams_search=regression_{kind}_goemotions_textcnn",
        *variant_args(out, variant, seeds, 0),
        f"hydra.sweeper.study_name={study_name(variant)}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"paths.output_dir={out}",
    ]
    if dry:
        print("$", *args)
        return 0
    return studies.sh(args)


def seed_run(out: Path, variant: str, seeds: list[int], seed: int, dry: bool) -> None:
    """<out>/seeds/<variant>-s<seed>: a regression variant at its best, the matched-budget baseline, or bench_tuned.py's
    run of a tuned objective (remade when --out is fresh: the teachers, and sides of the report)."""
    run_dir = out / "seeds" / f"{variant}-s{seed}"
    if (run_dir / "metrics.json").exists():
        return
    if variant in (*tuned.OBJECTIVES, "baseline_matched"):
        objective = variant.removesuffix("_matched")
        overrides = tuned.seed_args(objective, studies.best(out, tuned.study_name(objective)), seed)
        overrides += ["pipeline.budget=matched"] if variant == "baseline_matched" else []
    else:
        kind = VARIANTS[variant][0]
        found = studies.best(out, study_name(variant))
        if found is None:  # only in a dry run: the search has not run
            print(f"# {variant} seed {seed}: after its search")
            return
        overrides = [
            "experiment=goemotions_textcnn_tuning",
            f"regression={kind}",
            *variant_args(out, variant, seeds, seed),
            *studies.best_params(found),
            f"seed={seed}",
            "logger=csv",
            "pipeline.analyze=false",
        ]
    if studies.run_once(run_dir, overrides, dry) != 0:
        sys.exit(f"bench_regression: the {variant} run of seed {seed} failed; rerun this command")


def ranked(out: Path, variants: list[str]) -> list[str]:
    """The variants by their search's best validation macro-F1, best first (unsearched ones last)."""

    def value(variant: str) -> float:
        found = studies.best(out, study_name(variant))
        return found["best_value"] if found else float("-inf")

    return sorted(variants, key=value, reverse=True)


def render(out: Path, variants: list[str], rounds: str, seeds: list[int]) -> str:
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    target = int(rounds.split(",")[-1])
    done = {v: studies.trials_done(out, study_name(v)) for v in variants}
    waiting = missing_inputs(out)
    status = (
        "waiting for bench_tuned.py: " + "; ".join(waiting)
        if waiting
        else "searches complete"
        if min(done.values()) >= target
        else "**in progress**: " + ", ".join(f"{v} {d}" for v, d in done.items()) + f" of {target} trials"
    )
    lines = [
        "# Label regression done differently: each variant at its own best, against the tuned baseline",
        "",
        "GoEmotions, TextCNN, full data. Written by `python experiments/bench_regression.py"
        + (f" --rounds {rounds}" if rounds != ROUNDS else "")
        + "` (resumable; `--report-only` rewrites this "
        "file), after `experiments/bench_tuned.py`. Each variant's alpha and start epoch are searched with the "
        f"same budget ({target} trials, sampler seed 0"
        + (
            f"; the presets plan {PLANNED}, and `--rounds {ROUNDS}` grows every search to it"
            if target < PLANNED
            else ""
        )
        + ") on top of the tuned setting of the objective that trains with its loss, selected on "
        "validation macro-F1. Status: " + status + ".",
        "",
        "## Searches",
        "",
        "| variant | finished trials | best val macro-F1 | alpha, start | command |",
        "|---|---|---|---|---|",
    ]
    for variant in variants:
        found = studies.best(out, study_name(variant))
        kind = VARIANTS[variant][0]
        extra = [
            e.format(teacher="<tuned baseline s0 ckpt>", ensemble="<tuned baseline s0,s1,s2 ckpts>")
            for e in VARIANTS[variant][2]
        ]
        command = " ".join(
            [
                "python -m eqn.run -m",
                f"hparams_search=regression_{kind}_goemotions_textcnn",
                "<tuned setting>",
                *extra,
                f"hydra.sweeper.study_name={study_name(variant)}",
                f"hydra.sweeper.n_trials=<n> paths.output_dir={shown}",
            ]
        )
        value = f"{found['best_value']:.4f}" if found else "–"
        setting = (
            ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in found["best_params"].values())
            if found
            else "–"
        )
        lines.append(f"| {variant} | {done[variant]} | {value} | {setting} | `{command}` |")
    lines += [
        "",
        "## Every variant at its best, 3 seeds, with the tuned objectives",
        "",
        *studies.seeds_section(out, "*_*-s*", report_dir=out / "regression_report"),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "quality" / "tuned"))
    parser.add_argument("--rounds", default=ROUNDS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--no-matched",
        action="store_true",
        help="skip the matched-budget baseline's seed runs (made after every variant's)",
    )
    parser.add_argument(
        "--searches-only",
        action="store_true",
        help="grow the searches and save their journals, no seed runs and no report (a study split "
        "across sessions: the report needs every seed run in one --out)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out, seeds = Path(args.out).resolve(), [int(s) for s in args.seeds.split(",")]
    variants = studies.names(args.variants, VARIANTS, "variant(s)", "bench_regression")
    searched = [study_name(v) for v in variants]
    studies.restore_journals(out, [*(tuned.study_name(o) for o in tuned.OBJECTIVES), *searched], tuned.JOURNALS)
    if not args.report_only:
        waiting = missing_inputs(out)
        if waiting:
            sys.exit("bench_regression: bench_tuned.py has not finished: " + "; ".join(waiting))
        if any(VARIANTS[v][0] == "teacher" for v in variants):  # the teachers, before any search needs them
            for seed in seeds:
                seed_run(out, "baseline", seeds, seed, args.dry_run)
        studies.grow(
            out,
            {study_name(v): functools.partial(search, out, v, seeds=seeds, dry=args.dry_run) for v in variants},
            args.rounds,
            "bench_regression",
        )
        if args.searches_only:
            if not args.dry_run:
                studies.save_journals(out, searched, tuned.JOURNALS)
                print("bench_regression: searches grown to --rounds; journals saved to " + str(tuned.JOURNALS))
            return
        for seed in seeds:  # the fair baseline (teachers, when a teacher variant ran)
            seed_run(out, "baseline", seeds, seed, args.dry_run)
        for variant in ranked(out, variants):  # best first: a study stopped early has its best variants' seeds
            for seed in seeds:
                seed_run(out, variant, seeds, seed, args.dry_run)
        if not args.no_matched:  # the control of the teacher variants, which cost a teacher's training too
            for seed in seeds:
                seed_run(out, "baseline_matched", seeds, seed, args.dry_run)
        for seed in seeds:  # offline EQN (the paper's; bench_tuned.py measured it) beside them
            seed_run(out, "eqn", seeds, seed, args.dry_run)
    if args.dry_run:
        return
    studies.save_journals(out, searched, tuned.JOURNALS)
    path = ROOT / "experiments" / "results" / "regression.md"
    text = render(out, variants, args.rounds, seeds)
    write_text(path, text, own=False)
    studies.splice_quality(text, studies.REGRESSION_SECTION)
    print(f"wrote {path} and its section of quality.md")


if __name__ == "__main__":
    main()
