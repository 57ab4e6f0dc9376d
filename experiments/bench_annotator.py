"""The built-in annotator's recipe, chosen on validation only (issue 31, step 2):

    python experiments/bench_annotator.py [--out outputs/annotator] [--rounds 2,4,6] [--candidates full,lora,eqn,teacher]
    python experiments/bench_annotator.py --status

Candidates, each an Optuna study with the same budget, sampler seed and selection rule (conf/hparams_search/
annotator*.yaml): all-MiniLM-L6-v2 fine-tuned on the same 10,000 GoEmotions training rows (the searches' subset: the
same for every candidate), selected on the tuned-threshold macro-F1 of the full validation split, 2-4 epochs:
  full     full fine-tuning, BCE                                  (lr 1e-5..1e-4)
  lora     a LoRA delta on the frozen encoder (peft), BCE          (lr 1e-4..3e-3, rank 4/8/16, targets qv/attention/all)
  eqn      EQN: CoEQN -> label regression -> EQN                    (lr 1e-5..1e-4; two trainings per trial)
  teacher  distillation with BCE from the best `full` setting, trained once on the same rows (<out>/teacher)
           (lr, epochs, regression.alpha 0.2..1, regression.start 0..1)
  lora_teacher  the same distillation into a LoRA student (lora's space + alpha, start): the one that can ship
The studies grow in rounds (2, 4, 6 finished trials), full/lora/eqn in turn, then the two distillations in turn
(they need full's best); each step is the same resumable command (`python -m eqn.run -m hparams_search=annotator_<candidate>
hydra.sweeper.n_trials=<n> paths.output_dir=<out>`). The journals are copied to experiments/results/
annotator_journals/ after every step and restored from there into a fresh --out, so the searches continue across
checkouts; experiments/results/annotator_search.md holds each study's trials and best setting. Test figures are not
looked at here: the final recipe is trained on all training rows and tested once (make annotator).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from studies import best, best_params, load, names, restore_journals, run_once, save_journals, sh, trials_done  # noqa: E402

from eqn.io import write_text  # noqa: E402

CANDIDATES = ("full", "lora", "eqn", "teacher", "lora_teacher")
NEEDS_TEACHER = ("teacher", "lora_teacher")
JOURNALS = ROOT / "experiments" / "results" / "annotator_journals"
STATUS = ROOT / "experiments" / "results" / "annotator_search.md"


def study(candidate: str) -> str:
    return f"annotator_{candidate}"


def teacher_ckpt(out: Path) -> Path:
    return out / "teacher" / "checkpoints" / "baseline.ckpt"


def search(out: Path, candidate: str, n_trials: int) -> int:
    extra = [f"regression.teachers=[{teacher_ckpt(out)}]"] if candidate in NEEDS_TEACHER else []
    code = sh(
        [
            sys.executable,
            "-m",
            "eqn.run",
            "-m",
            f"hparams_search={study(candidate)}",
            f"hydra.sweeper.n_trials={n_trials}",
            f"paths.output_dir={out}",
            *extra,
        ]
    )
    save(out)
    return code


def make_teacher(out: Path) -> int:
    """The best `full` setting trained once (seed 0) on the searches' rows: the teacher of the distillation search."""
    found = best(out, study("full"))
    if found is None:
        return 1
    return run_once(
        out / "teacher", ["experiment=annotator_search", "pipeline=baseline", *best_params(found), "logger=csv"]
    )


def save(out: Path) -> None:
    save_journals(out, [study(c) for c in CANDIDATES], JOURNALS)
    write_text(STATUS, status(out), own=False)


def status(out: Path) -> str:
    lines = [
        "# The built-in annotator's recipe search (validation only)",
        "",
        "`python experiments/bench_annotator.py` (see its docstring): all-MiniLM-L6-v2 fine-tuned on the same "
        "10,000 GoEmotions training rows for every candidate, chosen on the tuned-threshold macro-F1 of the full "
        "validation split; equal trial budgets (6 each: 3 random, then TPE; sampler seed 0; median pruning), "
        "trainer.precision=auto. No test figure is read here.",
        "",
        "| candidate | trials finished (pruned) | best val macro-F1 | best setting |",
        "|---|---|---|---|",
    ]
    for candidate in CANDIDATES:
        loaded = load(out, study(candidate))
        if loaded is None:
            lines.append(f"| {candidate} | 0 | – | – |")
            continue
        done = [t for t in loaded.trials if t.state.name == "COMPLETE"]
        pruned = sum(t.state.name == "PRUNED" for t in loaded.trials)
        found = best(out, study(candidate))
        setting = ", ".join(best_params(found)) if found else "–"
        value = f"{found['best_value']:.4f}" if found else "–"
        lines.append(f"| {candidate} | {len(done) + pruned} ({pruned}) | {value} | `{setting}` |")
    lines += ["", "Every trial (val macro-F1, setting):", ""]
    for candidate in CANDIDATES:
        loaded = load(out, study(candidate))
        for t in loaded.trials if loaded is not None else []:
            value = f"{t.value:.4f}" if t.value is not None else t.state.name.lower()
            lines.append(
                f"- {candidate} #{t.number}: {value} — "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "annotator"))
    parser.add_argument("--rounds", default="2,4,6")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--status", action="store_true", help="write annotator_search.md from the journals and stop")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    chosen = names(args.candidates, CANDIDATES, "candidate", "bench_annotator.py")
    restore_journals(out, [study(c) for c in CANDIDATES], JOURNALS)
    if args.status:
        save(out)
        print(STATUS.read_text())
        return
    started = time.perf_counter()
    rounds = [int(x) for x in args.rounds.split(",")]
    for group in ([c for c in chosen if c not in NEEDS_TEACHER], [c for c in chosen if c in NEEDS_TEACHER]):
        if group and group[0] in NEEDS_TEACHER and make_teacher(out) != 0:
            sys.exit(
                "bench_annotator.py: the teacher (the best full fine-tuning setting) could not be trained; the "
                "full search must have a finished trial"
            )
        for n in rounds:
            for candidate in group:
                if trials_done(out, study(candidate)) < n and search(out, candidate, n) != 0:
                    sys.exit(f"bench_annotator.py: the {candidate} search stopped; rerun this command to continue it")
    save(out)
    print(f"done in {(time.perf_counter() - started) / 60:.0f} min; {STATUS}")


if __name__ == "__main__":
    main()
