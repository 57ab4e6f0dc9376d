"""The label-regression variant best on GoEmotions TextCNN, on other backbones (CNN, MiniLM) and other datasets
(emotion6, tsa3; issue 22): does its gain over the fair baseline carry over?

    python experiments/bench_transfer.py [--out outputs/quality/transfer] [--configs goemotions_minilm,...]
                                         [--seeds 0,1,2] [--matched] [--dry-run]
    python experiments/bench_transfer.py --report-only

The variant is the one bench_regression.py's searches rank first on validation macro-F1 (its committed journals are
restored; never chosen on test), at its searched alpha and start. Each configuration trains both sides with the same
settings, the project's defaults for that backbone and dataset (the untuned grid's of quality.md, so its baseline
seeds reproduce that grid's):
    baseline  `python -m eqn.run <config> pipeline=baseline seed=<s> logger=csv pipeline.analyze=false
               hydra.run.dir=<out>/seeds/<config>/baseline-s<s>`
    variant   `python -m eqn.run <config> regression=<kind> regression.alpha=<a> regression.start=<e>
               regression.loss=<loss> [regression.teachers=[<out>/seeds/<config>/baseline-s<s>/checkpoints/baseline.ckpt]]
               seed=<s> ... hydra.run.dir=<out>/seeds/<config>/<variant>-s<s>`
with the teacher of seed s the baseline of seed s. The variant's loss on a single-label dataset is the single-label
classifier's own (soft cross-entropy for BCE: the baseline trains with cross-entropy there); its start epoch is capped
at the last epoch (a one-epoch MiniLM applies its teacher before training). `--matched` adds the baseline at the EQN
pipeline's budget (pipeline.budget=matched), the control of a teacher variant's extra training. Seeds run interleaved
(baseline, then the variant, per seed), so a stopped study has paired seeds. Report: `python -m eqn.report <out>/seeds`
to experiments/results/transfer.md with every command, and as its section of quality.md. Intensities against human
ratings: `python experiments/bench_intensity.py --runs <out>/seeds --only goemotions_minilm --stages
baseline,<variant> --name intensity_transfer` (GoEmotions models only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bench_regression as regression
import bench_tuned as tuned
import studies

ROOT = studies.ROOT
from eqn.io import write_text  # noqa: E402

# name -> (overrides, epochs, single-label): the untuned grid's settings of quality.md
CONFIGS: dict[str, tuple[list[str], int, bool]] = {
    "emotion6_textcnn": (["data=emotion6", "model=textcnn"], 5, True),
    "tsa3_textcnn": (["data=tsa3", "model=textcnn"], 5, True),
    "goemotions_cnn": (["data=goemotions", "model=cnn"], 5, False),
    "goemotions_minilm": (
        ["data=goemotions", "model=minilm", "trainer.max_epochs=1", "trainer.precision=auto"],
        1,
        False,
    ),
}
SINGLE_LABEL_LOSS = {"bce": "ce"}  # a variant's loss -> the single-label classifier's own (others unchanged)


def winner(tuned_out: Path) -> tuple[str, dict]:
    """The variant bench_regression.py's searches rank first on validation, and its best trial."""
    studies.restore_journals(tuned_out, [regression.study_name(v) for v in regression.VARIANTS], tuned.JOURNALS)
    best = regression.ranked(tuned_out, list(regression.VARIANTS))[0]
    found = studies.best(tuned_out, regression.study_name(best))
    if found is None:
        sys.exit(
            "bench_transfer: bench_regression.py's searches have not run (no journal in experiments/results/"
            "tuned_journals)"
        )
    return best, found


def teacher(out: Path, config: str, seed: int) -> Path:
    return out / "seeds" / config / f"baseline-s{seed}" / "checkpoints" / "baseline.ckpt"


def variant_overrides(out: Path, config: str, variant: str, found: dict, seeds: list[int], seed: int) -> list[str]:
    kind, _, extra = regression.VARIANTS[variant]
    settings, epochs, single = CONFIGS[config]
    params = dict(found["best_params"])
    params["regression.start"] = min(int(params["regression.start"]), epochs - 1)
    fill = {
        "teacher": str(teacher(out, config, seed)),
        "ensemble": ",".join(str(teacher(out, config, s)) for s in seeds),
    }
    extra = [e.format(**fill) for e in extra]
    if single:
        extra = [
            f"regression.loss={SINGLE_LABEL_LOSS.get(e.split('=', 1)[1], e.split('=', 1)[1])}"
            if e.startswith("regression.loss=")
            else e
            for e in extra
        ]
    return [*settings, f"regression={kind}", *studies.best_params({"best_params": params}), *extra]


def run(out: Path, config: str, stage: str, overrides: list[str], seed: int, dry: bool) -> None:
    run_dir = out / "seeds" / config / f"{stage}-s{seed}"
    if studies.run_once(run_dir, [*overrides, f"seed={seed}", "logger=csv", "pipeline.analyze=false"], dry) != 0:
        sys.exit(f"bench_transfer: the {config} {stage} run of seed {seed} failed; rerun this command to continue")


def render(out: Path, variant: str, found: dict, configs: list[str], seeds: list[int]) -> str:
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    setting = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in found["best_params"].items())
    planned = [(c, s) for c in configs for s in seeds]
    done = sum((out / "seeds" / c / f"{variant}-s{s}" / "metrics.json").exists() for c, s in planned)
    lines = [
        "# The best label-regression variant on other backbones and other datasets",
        "",
        "Written by `python experiments/bench_transfer.py` (resumable; `--report-only` rewrites this file). "
        f"The variant is `{variant}`, first on validation macro-F1 in bench_regression.py's GoEmotions TextCNN "
        f"searches, at its searched {setting} (start capped at the last epoch). Both sides train with the "
        "project's default settings of each configuration (the untuned grid's of quality.md); the teacher of "
        "seed s is the baseline of seed s. "
        + (
            f"Status: complete ({done} of {len(planned)} variant seeds)."
            if done == len(planned)
            else f"Status: **in progress**, {done} of {len(planned)} variant seeds; rerun the command to continue."
        ),
        "",
        "| configuration | settings | variant's overrides |",
        "|---|---|---|",
    ]
    for config in configs:
        overrides = variant_overrides(out, config, variant, found, seeds, 0)
        shown_overrides = " ".join(o.replace(str(out), str(shown)) for o in overrides[len(CONFIGS[config][0]) :])
        lines.append(f"| {config} | `{' '.join(CONFIGS[config][0])}` | `{shown_overrides}` (seed 0) |")
    lines += [
        "",
        *studies.seeds_section(
            out,
            "*/*",
            f"Runs: `python -m eqn.run <settings> <pipeline=baseline | variant's "
            f"overrides> seed=<s> logger=csv pipeline.analyze=false "
            f"hydra.run.dir={shown}/seeds/<configuration>/<side>-s<s>`; ",
            report_dir=out / "report",
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "quality" / "transfer"))
    parser.add_argument(
        "--tuned-out",
        default=str(ROOT / "outputs" / "quality" / "tuned"),
        help="bench_regression.py's --out (its searches pick the variant)",
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--matched", action="store_true", help="also the matched-budget baseline, after the rest")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out, seeds = Path(args.out).resolve(), [int(s) for s in args.seeds.split(",")]
    configs = studies.names(args.configs, CONFIGS, "configuration(s)", "bench_transfer")
    variant, found = winner(Path(args.tuned_out).resolve())
    if not args.report_only:
        for config in configs:
            for seed in seeds:
                run(out, config, "baseline", [*CONFIGS[config][0], "pipeline=baseline"], seed, args.dry_run)
                run(
                    out,
                    config,
                    variant,
                    variant_overrides(out, config, variant, found, seeds, seed),
                    seed,
                    args.dry_run,
                )
        if args.matched:
            for config in configs:
                for seed in seeds:
                    run(
                        out,
                        config,
                        "baseline_matched",
                        [*CONFIGS[config][0], "pipeline=baseline", "pipeline.budget=matched"],
                        seed,
                        args.dry_run,
                    )
    if args.dry_run:
        return
    path = ROOT / "experiments" / "results" / "transfer.md"
    text = render(out, variant, found, configs, seeds)
    write_text(path, text, own=False)
    studies.splice_quality(text, studies.TRANSFER_SECTION)
    print(f"wrote {path} and its section of quality.md")


if __name__ == "__main__":
    main()
