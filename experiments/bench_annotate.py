"""Annotation at corpus scale, measured side by side in one run (targets printed beside the figures).

    python experiments/bench_annotate.py [--quick] [--out experiments/results/annotate.json]

1. MiniLM annotation of the GoEmotions test set (a MiniLM EQN trained for one epoch on 4,000 rows, thresholds
   tuned on val) in fp32 at the previous default batch (256), and fp32, bf16, int8 at the new default batch:
   texts/s, ratios to fp32 before and to fp32 at the same batch, the mean absolute intensity difference to fp32 and
   the share of rows whose `emotions` column is identical (target: a mode >= 3x today's fp32 with >= 99% identical).
2. TextCNN annotation texts/s (target >= 20,000 texts/s on 2 cores).
3. Peak RSS of `python -m eqn.annotate` (TextCNN) on 20k and 200k generated rows, each in a fresh process
   (target: flat, <= +5%).
4. Peak RSS of MiniLM training (one epoch, eqn module + datamodule) in a fresh process (target <= 2 GiB).
The other models are freshly initialised (speed does not depend on training); fixed seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import eqn.config  # noqa: E402,F401  (schemas and resolvers)
from eqn.data import sources  # noqa: E402
from eqn.data.datamodule import EQNDataModule  # noqa: E402
from eqn.inference import BATCH_SIZE, Annotator  # noqa: E402
from eqn.io import write_json  # noqa: E402
from eqn.models.module import build_module, plain  # noqa: E402


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def model(name: str, rows: int, eval_rows: int | None = None) -> tuple[torch.nn.Module, EQNDataModule]:
    cfg = compose(f"model={name}", f"data.max_train_samples={rows}", "paths.cache_dir=null")
    dm = EQNDataModule(
        "goemotions",
        cfg.data.data_dir,
        tokenizer=dict(cfg.model.tokenizer),
        max_length=128,
        max_train_samples=rows,
        max_eval_samples=eval_rows,
        cache_dir=None,
    ).prepare()
    torch.manual_seed(0)
    return build_module(dm.spec, cfg, "eqn", "bench"), dm


def trained_minilm(rows: int) -> torch.nn.Module:
    """MiniLM EQN trained for one epoch (bf16) on `rows` GoEmotions rows, thresholds tuned on 1,000 val rows: a model
    whose decisions are not trivial, so that 'identical decisions' means something."""
    from lightning.pytorch import Trainer

    module, dm = model("minilm", rows, eval_rows=1000)
    Trainer(
        accelerator="cpu",
        max_epochs=1,
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    ).fit(module, train_dataloaders=dm.train_dataloader())
    module.eval()
    module.fit_thresholds(Annotator(module).scores(dm.split("val").texts), dm.gold["val"])
    return module


# (precision, batch size): fp32 at 256 is the annotation default before this round ("today's fp32")
MODES = (("fp32", 256), ("fp32", BATCH_SIZE), ("bf16", BATCH_SIZE), ("int8", BATCH_SIZE), ("fast", BATCH_SIZE))


def annotate_modes(texts: list[str], rows: int) -> dict:
    trained = trained_minilm(rows)
    out, base = {}, None
    os.environ["EQN_CACHE_DIR"] = tempfile.mkdtemp()  # precision=fast: export and calibrate afresh
    for precision, batch_size in MODES:
        annotator = Annotator(copy.deepcopy(trained), "cpu", precision)
        started = time.perf_counter()
        annotator.scores(texts[: 512 if precision == "fast" else 64], batch_size)  # warm-up (fast: + calibration)
        warm = time.perf_counter() - started
        if precision == "fast":
            annotator.fast.rows = annotator.fast.rescored = 0
        started = time.perf_counter()
        scores = annotator.scores(texts, batch_size)
        seconds = time.perf_counter() - started
        emotions = annotator.emotions(scores)
        if base is None:
            base = (scores, emotions)
        out[f"{precision}@{batch_size}"] = {
            "texts_per_s": len(texts) / seconds,
            "mean_abs_diff_vs_fp32": float((scores - base[0]).abs().mean()),
            "identical_emotions_share": sum(a == b for a, b in zip(emotions, base[1])) / len(texts),
        }
        if precision == "fast":
            f = annotator.fast
            out[f"{precision}@{batch_size}"].update(
                engine=f.name,
                margin=torch.as_tensor(f.margin).tolist(),
                rescored_share=f.rescored / max(1, f.rows),
                first_use_s=warm,
                max_abs_diff_vs_fp32=float((scores - base[0]).abs().max()),
                calibration=f.report,
            )
            if f.engine is None:
                f.engine = f.build("onnxruntime-int8") or f.build("torch-int8")
                f.name = "onnxruntime-int8" if hasattr(f.engine, "session") else "torch-int8"
            ids, lengths = annotator.encoder.encode(texts, annotator.max_length, parallel=True)
            ids, lengths = torch.from_numpy(ids), torch.from_numpy(lengths)
            started = time.perf_counter()
            engine = f.engine_scores(ids, lengths, batch_size)
            seconds = time.perf_counter() - started
            engine_emotions = annotator.emotions(engine)
            out[f"{f.name} alone@{batch_size}"] = {
                "texts_per_s": len(texts) / seconds,
                "mean_abs_diff_vs_fp32": float((engine - base[0]).abs().mean()),
                "identical_emotions_share": sum(a == b for a, b in zip(engine_emotions, base[1])) / len(texts),
            }
    today, default = out["fp32@256"]["texts_per_s"], out[f"fp32@{BATCH_SIZE}"]["texts_per_s"]
    for mode in out.values():
        mode["ratio_vs_fp32_before"] = mode["texts_per_s"] / today
        mode["ratio_vs_fp32_same_batch"] = mode["texts_per_s"] / default
    return out


def textcnn_speed(texts: list[str]) -> float:
    module, _ = model("textcnn", 5000)
    annotator = Annotator(module, "cpu")
    annotator.scores(texts[:256])
    started = time.perf_counter()
    annotator.scores(texts)
    return len(texts) / (time.perf_counter() - started)


def child_peak_rss(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python process running `code`: VmHWM, the high-water mark of the process's own
    memory. (ru_maxrss would not do: Linux carries the parent's RSS at fork over the exec into the child's figure.)"""
    wrapped = code + (
        "\nimport re; print('PEAK', int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())"
        ".group(1)) / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", wrapped], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.rsplit("PEAK", 1)[1])


def annotation_rss(texts: list[str], sizes: list[int], work: Path) -> dict:
    module, _ = model("textcnn", 5000)
    ckpt = work / "textcnn.ckpt"
    from lightning.pytorch import __version__ as lightning_version

    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": plain(dict(module.hparams)),
            "pytorch-lightning_version": lightning_version,
        },
        ckpt,
    )
    out = {}
    for n in sizes:
        path = work / f"rows{n}.csv"
        pd.DataFrame({"text": [texts[i % len(texts)] for i in range(n)]}).to_csv(path, index=False)
        out[n] = child_peak_rss(
            f"from eqn.annotate import annotate_file; annotate_file({str(ckpt)!r}, {str(path)!r}, "
            f"{str(work / f'out{n}.csv')!r}, progress=False, overwrite=True)"
        )
    return out


def training_rss(rows: int) -> float:
    return child_peak_rss(
        "import sys; sys.path.insert(0, '.')\n"
        "from experiments.bench_annotate import model\n"
        "from lightning.pytorch import Trainer\n"
        f"module, dm = model('minilm', {rows})\n"
        "Trainer(accelerator='cpu', max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,"
        " limit_val_batches=0, num_sanity_val_steps=0).fit(module, train_dataloaders=dm.train_dataloader())"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the benchmark runs")
    parser.add_argument("--minilm-only", action="store_true", help="only the MiniLM precision modes (no RSS, TextCNN)")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "annotate.json"))
    args = parser.parse_args()
    test = sources.load("goemotions", "/nonexistent").splits["test"].texts
    texts = test[:300] if args.quick else test
    sizes = [2000, 20000] if args.quick else [20000, 200000]
    if args.minilm_only:
        modes = annotate_modes(texts, 300 if args.quick else 4000)
        print(json.dumps(modes, indent=1))
        return
    with tempfile.TemporaryDirectory() as work:
        result = {
            "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__},
            "minilm_annotation": annotate_modes(texts, 300 if args.quick else 4000),
            "texts": len(texts),
            "textcnn_annotation_texts_per_s": textcnn_speed(test[:2000] if args.quick else test * 4),
            "annotation_peak_rss_mib": annotation_rss(test, sizes, Path(work)),
            "minilm_training_peak_rss_mib": training_rss(200 if args.quick else 1600),
        }
    rss = result["annotation_peak_rss_mib"]
    growth = rss[sizes[1]] / rss[sizes[0]] - 1
    result["annotation_rss_growth"] = growth
    write_json(args.out, json.loads(json.dumps(result)), own=False)  # the project's results file
    modes = result["minilm_annotation"]
    fast = modes[f"fast@{BATCH_SIZE}"]
    margins = fast["margin"] if isinstance(fast["margin"], list) else [fast["margin"]]
    print(
        f"precision=fast: engine {fast['engine']}, largest margin {max(margins):.4f}, rows rescored in fp32 "
        f"{100 * fast['rescored_share']:.1f}%, max |intensity diff| {fast['max_abs_diff_vs_fp32']:.4f}, first use "
        f"(export + calibration) {fast['first_use_s']:.1f} s"
    )
    print(
        "| MiniLM annotation | texts/s | x fp32@256 (before) | x fp32, same batch | mean |diff| | identical "
        "emotions |\n|---|---|---|---|---|---|"
    )
    for k, v in modes.items():
        print(
            f"| {k} | {v['texts_per_s']:.0f} | {v['ratio_vs_fp32_before']:.2f} | {v['ratio_vs_fp32_same_batch']:.2f} | "
            f"{v['mean_abs_diff_vs_fp32']:.4f} | {100 * v['identical_emotions_share']:.1f}% |"
        )
    fast = [k for k in modes if modes[k]["identical_emotions_share"] >= 0.99]
    best = max(fast, key=lambda k: modes[k]["ratio_vs_fp32_before"])
    print(
        f"fastest mode with >= 99% identical decisions: {best}, {modes[best]['ratio_vs_fp32_before']:.2f}x today's "
        f"fp32 annotation (target >= 3x), {modes[best]['ratio_vs_fp32_same_batch']:.2f}x fp32 at the same batch size"
    )
    print(f"TextCNN annotation: {result['textcnn_annotation_texts_per_s']:.0f} texts/s (target >= 20,000)")
    print(
        f"annotation peak RSS: {rss[sizes[0]]:.0f} MiB at {sizes[0]} rows, {rss[sizes[1]]:.0f} MiB at {sizes[1]} "
        f"rows ({100 * growth:+.1f}%, target <= +5%)"
    )
    print(f"MiniLM training peak RSS: {result['minilm_training_peak_rss_mib']:.0f} MiB (target <= 2048)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
