"""Parallel local sweeps with and without per-job thread limits, measured side by side in one run.

    python experiments/bench_sweep.py [--seeds 0,1,2,3,4] [--out experiments/results/sweep.json]

The smoke grid (`experiment=smoke_grid`: emotion6, tfn3 x ann, textcnn x the seeds: 20 jobs with 5 seeds) is run
three times through Hydra's joblib launcher on this machine's cores:
  sequential  cluster=joblib hydra.launcher.n_jobs=1 (one job after the other, torch's default threads)
  threads     cluster=joblib (2 jobs at once, torch threads per job = cores / jobs: the framework's default)
  default     cluster=joblib threads=null (2 jobs at once, every job with torch's default threads = all cores)
Target: `threads` is not slower than `sequential`, and `default` shows the oversubscription it avoids.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from eqn.io import write_json  # noqa: E402

WAYS = {"sequential": ["hydra.launcher.n_jobs=1"], "threads": [], "default": ["threads=null"]}


def sweep(seeds: str, extra: list[str], out: Path) -> float:
    args = [sys.executable, "-m", "eqn.run", "-m", "experiment=smoke_grid", "cluster=joblib", "logger=none",
            f"seed={seeds}", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={out}",
            f"paths.cache_dir={out / 'cache'}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"sweep failed ({' '.join(extra) or 'default'}):\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    jobs = len(list(out.glob("*/metrics.json")))
    if jobs != 4 * len(seeds.split(",")):
        raise RuntimeError(f"expected {4 * len(seeds.split(','))} finished jobs in {out}, found {jobs}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "sweep.json"))
    args = parser.parse_args()
    jobs = 4 * len(args.seeds.split(","))
    seconds = {}
    with tempfile.TemporaryDirectory() as work:
        for way, extra in WAYS.items():
            seconds[way] = sweep(args.seeds, extra, Path(work) / way)
            print(f"{way}: {jobs} jobs in {seconds[way]:.0f} s", flush=True)
    result = {"jobs": jobs, "cores": len(os.sched_getaffinity(0)), "seconds": seconds,
              "threads_vs_sequential": seconds["sequential"] / seconds["threads"],
              "default_vs_sequential": seconds["sequential"] / seconds["default"],
              "threads_vs_default": seconds["default"] / seconds["threads"]}
    write_json(args.out, result)
    print(f"2 parallel jobs with threads per job: {result['threads_vs_sequential']:.2f}x sequential (target >= 1); "
          f"with torch's default threads: {result['default_vs_sequential']:.2f}x sequential; "
          f"thread limit speed-up {result['threads_vs_default']:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
