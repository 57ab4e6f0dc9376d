"""Parallel local sweeps with and without per-job thread limits, measured side by side in one run.

    python experiments/bench_sweep.py [--seeds 0,1,2,3,4] [--rows 200,4000] [--out experiments/results/sweep.json]

The smoke grid (`experiment=smoke_grid`: emotion6, tfn3 x ann, textcnn x the seeds: 20 jobs with 5 seeds; 200
training rows per job, and again with 4,000 so that torch's compute dominates the job) is run
three times through Hydra's joblib launcher on this machine's cores:
  sequential  cluster=joblib hydra.launcher.n_jobs=1 (one job after the other, torch's default threads)
  threads     cluster=joblib (2 jobs at once, torch threads per job = cores / jobs: the framework's default)
  all_cores   cluster=joblib threads=<cores> (2 jobs at once, every job with as many torch threads as cores: what
              two jobs started by hand get; joblib's own workers would otherwise start with OMP_NUM_THREADS=1)
Target: `threads` is not slower than `sequential`, and `all_cores` shows the oversubscription it avoids.
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
from eqn.io import write_json  # noqa: E402

CORES = len(os.sched_getaffinity(0))
WAYS = {"sequential": ["hydra.launcher.n_jobs=1"], "threads": [], "all_cores": [f"threads={CORES}"]}


def sweep(seeds: str, rows: int, extra: list[str], out: Path) -> float:
    args = [
        sys.executable,
        "-m",
        "eqn.run",
        "-m",
        "experiment=smoke_grid",
        "cluster=joblib",
        "logger=none",
        f"seed={seeds}",
        f"data.max_train_samples={rows}",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={out}",
        f"paths.cache_dir={out / 'cache'}",
        *extra,
    ]
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
    parser.add_argument("--rows", default="200,4000", help="training rows per job: the smoke grid's 200, and more")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "sweep.json"))
    args = parser.parse_args()
    jobs = 4 * len(args.seeds.split(","))
    result = {"jobs": jobs, "cores": CORES, "by_train_rows": {}}
    with tempfile.TemporaryDirectory() as work:
        for rows in map(int, args.rows.split(",")):
            seconds = {}
            for way, extra in WAYS.items():
                seconds[way] = sweep(args.seeds, rows, extra, Path(work) / f"{rows}-{way}")
                print(f"{rows} rows per job, {way}: {jobs} jobs in {seconds[way]:.0f} s", flush=True)
            r = result["by_train_rows"][rows] = {
                "seconds": seconds,
                "threads_vs_sequential": seconds["sequential"] / seconds["threads"],
                "all_cores_vs_sequential": seconds["sequential"] / seconds["all_cores"],
                "threads_vs_all_cores": seconds["all_cores"] / seconds["threads"],
            }
            print(
                f"{rows} rows: 2 parallel jobs with threads per job {r['threads_vs_sequential']:.2f}x sequential "
                f"(target >= 1), with {CORES} threads per job {r['all_cores_vs_sequential']:.2f}x sequential; "
                f"the thread limit is {r['threads_vs_all_cores']:.2f}x faster",
                flush=True,
            )
    write_json(args.out, result, own=False)  # the project's results file
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
