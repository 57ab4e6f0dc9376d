"""Build the built-in annotator from scratch (make annotator; issue 31): train the chosen recipe on all of GoEmotions'
training split, calibrate it on validation, test it once, check its intensities against people, pack it into
eqn/builtin/ and write experiments/results/annotator.md.

    python experiments/build_annotator.py [--out outputs/annotator/final] [--seeds 0,1,2]
    python experiments/build_annotator.py --recipe pipeline=baseline '+model.backbone.lora={r: 8}' ... # a given recipe

1. Recipe: of the candidates that ship within 10 MB (a LoRA delta and the head, merged into the packaged base at
   load), the one whose search (experiments/bench_annotator.py) found the best validation macro-F1, at its best
   setting — validation only, never test (--recipe gives one instead); every search's best is stated beside it.
2. Seeds: `python -m eqn.run experiment=annotator <recipe> seed=<s> hydra.run.dir=<out>/seeds/annotator/baseline-s<s>`
   (a distillation: distilled-s<s>, after its teacher, <out>/teacher) for each seed, and EQN trained the same way (pipeline=eqn, the same model, delta and settings) for the comparison of
   intensities with people (…/eqn-s<s>). The first seed is shipped.
3. Calibration: one temperature for all labels, fitted on validation (it keeps every decision); kept if it lowers
   the mean per-label ECE on validation. Per-label ECE on test is reported before and after.
4. People: EmoBank (valence, arousal; `eqn.validate emobank=`) for the shipped model and EQN side by side; VADER's
   rated tweets through experiments/bench_intensity.py over the seeds.
5. Speed: texts/s on the test texts at fp32, precision=fast and precision=auto, side by side in this process; peak
   RSS.
Deterministic on one CPU: the same command rewrites the same files.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
from bench_annotator import CANDIDATES, JOURNALS, study  # noqa: E402

from eqn.io import write_text  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "annotator.md"
SHIPPABLE = (
    "lora",
    "lora_teacher",
)  # the candidates whose model ships within 10 MB (the others fine-tune every weight)
ANCHORS = [
    ("Demszky et al. 2020, BERT-base (thresholds tuned on val)", 0.46),
    ("monologg/bert-base-cased-goemotions-original", 0.488),
    ("MiniLMv2-L6 distilled from roberta-large", 0.487),
    ("roberta-base, threshold 0.5", 0.450),
    ("frozen all-MiniLM-L6-v2 + linear head, threshold 0.5", 0.26),
]


def sh(args: list[str]) -> int:
    print("$", " ".join(shlex.quote(a) for a in args), flush=True)
    return subprocess.run(args, cwd=ROOT, check=False).returncode


def chosen_recipe(out_search: Path) -> tuple[list[str], str]:
    """The search with the best validation macro-F1 (over the candidates that finished trials) at its best setting,
    with its preset's own settings (the LoRA block) written out."""
    import studies

    studies.restore_journals(out_search, [study(c) for c in CANDIDATES], JOURNALS)
    found = {c: studies.best(out_search, study(c)) for c in CANDIDATES}
    found = {c: f for c, f in found.items() if f}
    if not found:
        sys.exit("build_annotator.py: no finished search trial; run experiments/bench_annotator.py first")
    shippable = [c for c in found if c in SHIPPABLE]  # a LoRA delta: at most 10 MB inside the package
    if not shippable:
        sys.exit("build_annotator.py: no LoRA search has a finished trial; run experiments/bench_annotator.py")
    best = max(shippable, key=lambda c: found[c]["best_value"])
    params = studies.best_params(found[best])
    lora = {k.split(".")[-1]: v for k, v in found[best]["best_params"].items() if ".lora." in k}
    recipe = [
        "pipeline=baseline" if best == "lora" else "pipeline=eqn",
        "+model.backbone.lora={"
        + ", ".join(f"{k}: {v}" for k, v in {"alpha": "null", "dropout": 0.05, **lora}.items())
        + "}",
        *[p for p in params if ".lora." not in p],
    ]
    if best == "lora_teacher":  # the teacher: the best full fine-tuning setting, trained on the same (all) rows
        recipe += [
            "regression=teacher",
            "regression.loss=bce",
            "TEACHER",
            *[f"TEACHER_ARG:{p}" for p in studies.best_params(found["full"])],
        ]
    why = ", ".join(f"{c} {f['best_value']:.4f}" for c, f in sorted(found.items(), key=lambda kv: -kv[1]["best_value"]))
    return recipe, (
        f"{best}, the best shippable candidate on validation (best validation macro-F1 of each search: "
        f"{why}; only a LoRA delta fits the package)"
    )


def train(run_dir: Path, overrides: list[str]) -> None:
    if (run_dir / "metrics.json").exists():
        return
    if sh([sys.executable, "-m", "eqn.run", *overrides, f"hydra.run.dir={run_dir}"]) != 0:
        sys.exit(f"build_annotator.py: training {run_dir} stopped; rerun this command to resume it")


def splits(ckpt: Path, extra: list[str]):
    """(val texts, val gold, test texts, test gold) of GoEmotions as the run saw them."""
    from omegaconf import OmegaConf

    from eqn.data.datamodule import EQNDataModule

    cfg = OmegaConf.load(ckpt.parent.parent / "config.yaml")
    dm = EQNDataModule(
        cfg.data.name,
        cfg.data.data_dir,
        tokenizer={},
        encoder=(ckpt.parent.parent / "tokenizer.json").read_text(),
        max_eval_samples=cfg.data.max_eval_samples,
        max_train_samples=10,
    ).prepare()
    return dm.split("val").texts, dm.gold["val"], dm.split("test").texts, dm.gold["test"]


def data_sha256(data_dir: str) -> str:
    """SHA-256 of GoEmotions' rows as training read them (every split's texts and label ids, in order): the same
    whether they came from the data dir or the package's embedded copy."""
    import hashlib

    from eqn.data import sources

    data = sources.load("goemotions", data_dir)
    rows = {name: [split.texts, [list(map(int, ids)) for ids in split.labels]] for name, split in data.splits.items()}
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def calibrate(module, val_texts, val_gold, test_texts, test_gold) -> dict:
    import copy

    from eqn.calibration import ece, fit_temperature, fold_temperature
    from eqn.inference import Annotator

    annotator = Annotator(copy.deepcopy(module))  # (an Annotator merges the LoRA delta in place; this one stays LoRA)
    val, test = annotator.scores(val_texts), annotator.scores(test_texts)
    logits = torch.logit(val.clamp(1e-7, 1 - 1e-7))
    t = fit_temperature(logits, val_gold, per_label=False)
    before = {"val": ece(val, val_gold), "test": ece(test, test_gold)}
    shifted = {s: torch.sigmoid(torch.logit(x.clamp(1e-7, 1 - 1e-7)) / t) for s, x in (("val", val), ("test", test))}
    after = {"val": ece(shifted["val"], val_gold), "test": ece(shifted["test"], test_gold)}
    keep = bool(after["val"].mean() < before["val"].mean())
    if keep:
        fold_temperature(module, t)
    return {
        "temperature": float(t[0]),
        "kept": keep,
        "ece_test_before": before["test"].tolist(),
        "ece_test_after": after["test"].tolist(),
        "ece_val_before_mean": float(before["val"].mean()),
        "ece_val_after_mean": float(after["val"].mean()),
    }


def speed(ckpt_module, texts: list[str]) -> dict:
    from eqn.inference import Annotator

    out, calibration = {}, {}
    for precision in ("fp32", "fast", "auto"):
        annotator = Annotator(ckpt_module, precision=precision)
        annotator.scores(texts[:256])  # warm-up (fast: calibrates its engine once)
        started = time.perf_counter()
        scores = annotator.scores(texts)
        seconds = time.perf_counter() - started
        out[precision] = {
            "texts_per_s": len(texts) / seconds,
            "emotions": annotator.emotions(scores),
            "engine": getattr(annotator.fast, "name", annotator.precision),
        }
        if annotator.fast is not None:  # every engine precision=fast measured against fp32 when it chose
            report = annotator.fast.report
            calibration = {
                "texts": report.get("texts"),
                "fp32_s": report.get("fp32_s"),
                "candidates": {
                    k: {"seconds": v["seconds"], "rescored_share": v["rescored_share"]}
                    for k, v in (report.get("candidates") or {}).items()
                },
            }
    same = np.mean([a == b for a, b in zip(out["fp32"]["emotions"], out["fast"]["emotions"])])
    return {k: {"texts_per_s": v["texts_per_s"], "engine": v["engine"]} for k, v in out.items()} | {
        "fast_same_emotions": float(same),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fast_calibration": calibration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "annotator" / "final"))
    parser.add_argument("--search", default=str(ROOT / "outputs" / "annotator"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipe", nargs="*", help="overrides of the recipe instead of the searches' choice")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every training (tests)")
    parser.add_argument("--folder", default=None, help="where to pack (default: eqn/builtin)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--emobank", default=None, help="emobank.csv (default: the data dir's)")
    parser.add_argument("--no-eqn", action="store_true", help="skip the EQN comparison runs")
    parser.add_argument("--no-vader", action="store_true", help="skip VADER's rated tweets (bench_intensity.py)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    recipe, why = (args.recipe, "given with --recipe") if args.recipe else chosen_recipe(Path(args.search).resolve())
    if not any("lora" in r for r in recipe):
        sys.exit(
            f"build_annotator.py: the chosen recipe ({why}) is not a LoRA delta; the package ships at most 10 MB "
            "(a LoRA delta and the head): choose a LoRA recipe with --recipe"
        )
    print(f"recipe: {' '.join(recipe)} — {why}", flush=True)
    teacher_args = [r.split(":", 1)[1] for r in recipe if r.startswith("TEACHER_ARG:")]
    recipe = [r for r in recipe if not r.startswith("TEACHER_ARG:")]
    if "TEACHER" in recipe:  # distillation: its teacher trained first, on all the training rows
        teacher = out / "teacher"
        train(teacher, ["experiment=annotator", "pipeline=baseline", *teacher_args, *args.extra])
        recipe = [
            f"regression.teachers=[{teacher / 'checkpoints' / 'baseline.ckpt'}]" if r == "TEACHER" else r
            for r in recipe
        ]
    stage = "eqn" if "pipeline=eqn" in recipe else "baseline"
    # the shipped model's runs: baseline-s<seed> (bench_intensity.py's layout), a distillation's distilled-s<seed>
    # (its pipeline ends with eqn.ckpt, which bench_intensity.py reads there for any stage other than its own)
    run_name = "baseline" if stage == "baseline" else "distilled"
    base = ["experiment=annotator", *recipe, *args.extra]
    for s in seeds:
        train(out / "seeds" / "annotator" / f"{run_name}-s{s}", [*base, f"seed={s}"])
        if not args.no_eqn:
            # EQN trained the same way: the same model, delta and settings, the EQN objective (no distillation)
            eqn = [o for o in base if not o.startswith(("pipeline=", "regression"))]
            train(out / "seeds" / "annotator" / f"eqn-s{s}", [*eqn, "pipeline=eqn", f"seed={s}"])
    from eqn import builtin
    from eqn.models.module import load_module
    from eqn.validate import read_emobank, validate_emobank

    shipped_run = out / "seeds" / "annotator" / f"{run_name}-s{seeds[0]}"
    ckpt = shipped_run / "checkpoints" / f"{stage}.ckpt"
    metrics = json.loads((shipped_run / "metrics.json").read_text())
    module = load_module(ckpt)
    val_texts, val_gold, test_texts, test_gold = splits(ckpt, args.extra)
    calibration = calibrate(module, val_texts, val_gold, test_texts, test_gold)
    calibrated = out / "calibrated.ckpt"
    from eqn.stages import save_final_checkpoint

    if calibrated.exists():
        calibrated.unlink()
    save_final_checkpoint(module, calibrated)
    names = list(module.hparams.label_names)
    support = test_gold.sum(0).tolist()
    per_label = {
        n: {
            "val_f1": metrics.get(f"{stage}/val/f1/{n}"),
            "test_f1": metrics.get(f"{stage}/test/f1/{n}"),
            "support": int(support[j]),
        }
        for j, n in enumerate(names)
    }
    command = f"make annotator  # python experiments/build_annotator.py {' '.join(sys.argv[1:])}".rstrip()
    seed_metrics = [
        json.loads((out / "seeds" / "annotator" / f"{run_name}-s{s}" / "metrics.json").read_text()) for s in seeds
    ]
    figures = {
        "test macro-F1 (thresholds tuned on val)": {"value": metrics[f"{stage}/test/f1_macro"], "command": command},
        "test micro-F1": {"value": metrics[f"{stage}/test/f1_micro"], "command": command},
        "test macro-F1 at threshold 0.5": {"value": metrics[f"{stage}/test/fixed/f1_macro"], "command": command},
        f"test macro-F1, mean of {len(seeds)} seeds": {
            "value": float(np.mean([m[f"{stage}/test/f1_macro"] for m in seed_metrics])),
            "command": command,
        },
    }
    emobank = Path(args.emobank) if args.emobank else None
    if emobank is None:
        from eqn.config import default_data_dir

        emobank = Path(default_data_dir()) / "emobank" / "emobank.csv"
    people = None
    if emobank.is_file():
        ckpts = {"annotator": str(calibrated)}
        if not args.no_eqn:
            ckpts["EQN"] = str(out / "seeds" / "annotator" / f"eqn-s{seeds[0]}" / "checkpoints" / "eqn.ckpt")
        people = validate_emobank(ckpts, read_emobank(emobank))
    vader = None
    if not (args.no_eqn or args.no_vader):  # VADER's rated tweets, the annotator vs EQN over the seeds (ranks: the
        # shared temperature changes none)
        code = sh(
            [
                sys.executable,
                "experiments/bench_intensity.py",
                "--runs",
                str(out / "seeds"),
                "--only",
                "annotator",
                "--stages",
                f"{run_name},eqn",
                "--name",
                "intensity_annotator",
            ]
        )
        vader = "experiments/results/intensity_annotator.md" if code == 0 else f"bench_intensity.py failed ({code})"
    verdicts = []
    if people is not None:
        for _, row in people[people.emotion.str.endswith("(all)")].iterrows():
            if row.model in ("annotator", "EQN"):
                figures[f"EmoBank {row.emotion.split()[0]}: Spearman r, {row.model}"] = {
                    "value": row.spearman,
                    "command": command,
                }
        verdicts = people_verdicts(people)
    figures["mean per-label ECE on test, before / after the temperature"] = {
        "value": f"{np.mean(calibration['ece_test_before']):.4f} / {np.mean(calibration['ece_test_after']):.4f}",
        "command": command,
    }
    timing = speed(load_module(calibrated), test_texts)
    for k, v in timing.items():
        if isinstance(v, dict) and "texts_per_s" in v:
            figures[f"texts/s, precision={k} ({v['engine']}, this CPU)"] = {
                "value": f"{v['texts_per_s']:.0f}",
                "command": command,
            }
    folder = Path(args.folder) if args.folder else None
    from omegaconf import OmegaConf

    data_digest = data_sha256(OmegaConf.load(shipped_run / "config.yaml").data.data_dir)
    recipe = [r.replace(f"{ROOT}/", "") for r in recipe]  # the teacher's path as written here, not this machine's
    builtin.pack(
        calibrated,
        folder,
        {
            "command": command,
            "recipe": recipe,
            "recipe_choice": why,
            "data_sha256": data_digest,
            "figures": figures,
            "per_label": per_label,
            "calibration": {k: v for k, v in calibration.items() if "ece_test" not in k},
        },
    )
    write_text(
        args.results,
        render(
            recipe,
            why,
            seeds,
            seed_metrics,
            figures,
            per_label,
            calibration,
            people,
            timing,
            names,
            vader,
            verdicts,
            [] if args.no_eqn else eqn_comparison(out, run_name, seeds),
        ),
        own=False,
    )
    print(f"packed {folder or builtin.FOLDER}; wrote {args.results}")


def people_verdicts(people) -> list[str]:
    """The plain answer per dimension (all genres): which model's intensities are closer to people's ratings."""
    out = []
    for _, row in people[(people.checkpoint == "paired") & people.emotion.str.endswith("(all)")].iterrows():
        dim = row.emotion.split()[0]
        diff = f"Spearman difference {row.spearman:+.3f} [{row.spearman_low:+.3f}, {row.spearman_high:+.3f}], p={row.spearman_p:.3g}"
        if row.spearman_low > 0:
            out.append(f"{dim}: the annotator's intensities are closer to people's ratings than EQN's ({diff}).")
        elif row.spearman_high < 0:
            out.append(f"{dim}: EQN's intensities are closer to people's ratings than the annotator's ({diff}).")
        else:
            out.append(f"{dim}: no significant difference between the annotator and EQN ({diff}).")
    return out


def vader_verdict(path: Path) -> str:
    """The plain answer on VADER's rated tweets: per label and view, whether EQN's intensities are significantly
    closer to people's ratings than the annotator's (its paired bootstrap over tweets, averaged over seeds)."""
    rows = [r for r in json.loads(path.read_text())["rows"] if r.get("seed") == "all" and r.get("p") is not None]
    if not rows:
        return "no paired rows"
    better = [r for r in rows if r["boot_low"] > 0]  # EQN − annotator above 0: EQN closer
    worse = [r for r in rows if r["boot_high"] < 0]
    diffs = sorted(r["spearman"] for r in rows)
    return (
        f"of {len(rows)} label × view comparisons, the annotator's intensities are closer to people's ratings in "
        f"{len(worse)}, EQN's in {len(better)}, no significant difference in {len(rows) - len(worse) - len(better)} "
        f"(Spearman EQN − annotator from {diffs[0]:+.3f} to {diffs[-1]:+.3f})"
    )


def eqn_comparison(out: Path, run_name: str, seeds: list[int]) -> list[str]:
    """EQN trained the same way beside the annotator: validation and test macro-F1 (mean over the seeds both have)."""
    rows = []
    for name, run, stage in (
        ("annotator", run_name, "eqn" if run_name == "distilled" else "baseline"),
        ("EQN (CoEQN, then EQN: two trainings)", "eqn", "eqn"),
    ):
        found = [out / "seeds" / "annotator" / f"{run}-s{s}" / "metrics.json" for s in seeds]
        found = [json.loads(p.read_text()) for p in found if p.is_file()]
        if not found:
            return []
        cells = [
            float(np.mean([m[f"{stage}/{k}"] for m in found]))
            for k in ("val/f1_macro", "test/f1_macro", "test/fixed/f1_macro", "test/f1_micro")
        ]
        rows.append(f"| {name} | {len(found)} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return [
        "## EQN trained the same way",
        "",
        "The same encoder, LoRA delta, learning rate and epochs per training, with the EQN objective and one round of "
        "label regression (so twice the annotator's training). The annotator was chosen on validation before this "
        "comparison was run; test figures are reported, never used to choose.",
        "",
        "| model | seeds | val macro-F1 | test macro-F1 | test macro-F1 at 0.5 | test micro-F1 |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def render(
    recipe,
    why,
    seeds,
    seed_metrics,
    figures,
    per_label,
    calibration,
    people,
    timing,
    names,
    vader: str | None = None,
    verdicts: list[str] | None = None,
    comparison: list[str] | None = None,
) -> str:
    lines = [
        "# The built-in annotator",
        "",
        "`make annotator` (`python experiments/build_annotator.py`) wrote this file, the model card and eqn/builtin/.",
        "",
        f"Recipe: `{' '.join(recipe)}` — {why}.",
        "",
        "## Figures (GoEmotions test, once; EmoBank; speed on this CPU)",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [
        f"| {k} | {v['value']:.4f} |" if isinstance(v["value"], float) else f"| {k} | {v['value']} |"
        for k, v in figures.items()
    ]
    key = next(k for k in seed_metrics[0] if k.endswith("/test/f1_macro") and k.count("/") == 2)
    lines += [
        "",
        "Per seed: " + ", ".join(f"seed {s} {m[key]:.4f}" for s, m in zip(seeds, seed_metrics)),
        "",
        "Published anchors (test macro-F1): " + "; ".join(f"{n} {v:.3f}" for n, v in ANCHORS),
        "",
        "| label | val F1 | test F1 | support | ECE before | ECE after |",
        "|---|---|---|---|---|---|",
    ]
    for j, n in enumerate(names):
        p = per_label[n]
        lines.append(
            f"| {n} | {p['val_f1'] or 0:.3f} | {p['test_f1'] or 0:.3f} | {p['support']} | "
            f"{calibration['ece_test_before'][j]:.4f} | {calibration['ece_test_after'][j]:.4f} |"
        )
    lines += [
        "",
        f"## Calibration: one temperature {calibration['temperature']:.3f} fitted on validation, "
        f"{'kept' if calibration['kept'] else 'not kept'} (mean val ECE {calibration['ece_val_before_mean']:.4f} "
        f"-> {calibration['ece_val_after_mean']:.4f}; every decision unchanged)",
        "",
    ]
    if people is not None:
        from eqn.validate import render as render_people

        lines += [
            "## Intensities against people: EmoBank",
            "",
            "Valence: mean intensity of GoEmotions' positive labels "
            "minus that of its negative ones; arousal: the strongest intensity (neutral left out). Rows "
            "'annotator − EQN' are paired bootstrap differences (the same resampled sentences for both).",
            "",
            *[f"- {v}" for v in verdicts or []],
            "",
            render_people(people),
            "",
        ]
    if vader:
        lines += [
            "## Intensities against people: VADER's rated tweets",
            "",
            f"The annotator against EQN trained the same way, per label and seed: {vader}",
            "",
        ]
        if (ROOT / vader).is_file() and vader.endswith(".md"):
            lines[-1:-1] = ["", f"- {vader_verdict((ROOT / vader).with_suffix('.json'))}."]
    lines += comparison or []
    lines += ["## Speed (test texts, this CPU, side by side)", "", "| precision | engine | texts/s |", "|---|---|---|"]
    lines += [
        f"| {k} | {v['engine']} | {v['texts_per_s']:.0f} |"
        for k, v in timing.items()
        if isinstance(v, dict) and "texts_per_s" in v
    ]
    lines += [
        "",
        f"precision=fast keeps fp32's emotions on {100 * timing['fast_same_emotions']:.1f} % of rows; peak "
        f"RSS {timing['peak_rss_mib']:.0f} MiB.",
        "",
    ]
    engines = timing.get("fast_calibration") or {}
    if engines.get("candidates") and engines.get("fp32_s"):
        lines += [
            f"Every engine of precision=fast against fp32 on its {engines['texts']} calibration texts (the "
            "choice weighs each one's time with the fp32 time of the rows its margins hand back):",
            "",
            "| engine | seconds | speed-up over fp32 | rows handed back to fp32 |",
            "|---|---|---|---|",
            f"| fp32 | {engines['fp32_s']:.2f} | 1.00× | – |",
        ]
        lines += [
            f"| {name} | {c['seconds']:.2f} | {engines['fp32_s'] / c['seconds']:.2f}× | "
            f"{100 * c['rescored_share']:.1f} % |"
            for name, c in engines["candidates"].items()
        ] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
