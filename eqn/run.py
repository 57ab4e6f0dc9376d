"""`python -m eqn.run model=bert data=goemotions`: compose the config, run the pipeline in the Hydra run dir."""

from __future__ import annotations

import gc
import logging
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from eqn import config  # noqa: E402  (registers schemas and resolvers)
from eqn.errors import ConfigError, DataError
from eqn.interrupt import Interrupted, interruptible  # noqa: E402
from eqn.io import RunLock  # noqa: E402
from eqn.search import Pruned  # noqa: E402

log = logging.getLogger("eqn")


def quiet_lightning() -> None:
    """Lightning prints through its own handler as well as Hydra's: keep one copy, drop the ad."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def run(cfg: DictConfig, run_dir: str | None = None) -> dict[str, float]:
    """Run the configured pipeline (also callable from tests with a composed config)."""
    quiet_lightning()
    config.validate(cfg)
    if str(cfg.trainer.get("precision")) == "auto":  # bf16 only where the hardware has it (eqn/precision.py)
        from eqn.precision import training_precision

        chosen, why = training_precision("auto", cfg.trainer.get("accelerator", "auto"))
        OmegaConf.update(cfg, "trainer.precision", chosen)
        log.info("trainer.precision=auto: %s (%s)", chosen, why)
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    if run_dir is None:
        run_dir = HydraConfig.get().runtime.output_dir
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    from eqn.gpus import job_gpus, local_parallel_sweep

    with job_gpus(cfg, local_parallel_sweep()):  # parallel local jobs on a multi-GPU machine: a GPU each
        return run_in(cfg, run_dir)


_frozen = False


def run_in(cfg: DictConfig, run_dir: str) -> dict[str, float]:
    from eqn.pipeline import Pipeline

    global _frozen
    # The ~500k objects of torch, Lightning and transformers live as long as the process: keep them out of every
    # cyclic collection (each full one, e.g. the one freeing a trained stage, took 0.3 s). A later run in the same
    # process (a sweep's next job, a test session) first collects what the last one left, then freezes what still
    # lives, so no garbage is frozen and the stages' collections stay small.
    if _frozen:
        gc.collect()
    gc.freeze()
    _frozen = True
    pipeline = Pipeline(cfg, run_dir)
    main = pipeline.is_main
    pipeline.rundir.check(main)  # before the lock: a refused run writes nothing into the folder
    with interruptible(), RunLock(run_dir) if main else nullcontext():
        dm = pipeline.open()
        with job_log(Path(run_dir), main):
            if main:
                with pipeline.rundir.writing():
                    write_hydra_record(Path(run_dir), cfg)
            return pipeline.run(dm)


@contextmanager
def job_log(run_dir: Path, main: bool):
    """Hydra's job log (<run dir>/<job name>.log), opened only now that the run dir has accepted the run."""
    try:
        name = HydraConfig.get().job.name
    except ValueError:  # called without Hydra (tests, notebooks)
        name = None
    if not main or name is None:
        yield
        return
    handler = logging.FileHandler(run_dir / f"{name}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def write_hydra_record(run_dir: Path, cfg: DictConfig) -> None:
    """Hydra's record of the job (.hydra/config.yaml, hydra.yaml, overrides.yaml), written once the run dir has
    accepted the run; a record eqn did not write (a run of an older eqn, Hydra's own) is left as it is."""
    from eqn.io import write_text
    from eqn.ownership import owns_file

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return
    record = {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)})),
        "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task))),
    }
    for name, text in record.items():
        path = run_dir / ".hydra" / name
        if path.exists() and not owns_file(path):
            log.warning("%s: not written by this eqn (an older run's record); left as it is", path)
            continue
        write_text(path, text)


def main() -> float | None:
    """`python -m eqn.run`: the output folder is checked before Hydra creates it (one line, not Hydra's traceback)."""
    problem = output_dir_problem(sys.argv[1:]) or override_problem(sys.argv[1:])
    if problem:  # (no logging yet: Python's last-resort handler would print it a second time)
        sys.exit(f"eqn: error: {problem}")
    return hydra_main()


def override_problem(argv: list[str]) -> str | None:
    """A single run's overrides, composed once before Hydra starts: a misspelt key or a value of the wrong type is
    one line (Hydra's own report is 6-8). Sweeps (-m) and Hydra's flags are left to Hydra."""
    if any(a.startswith("-") for a in argv):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
            compose("config", overrides=list(argv))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        noise = ("full_key:", "reference_type", "object_type", "Set the environment", "To append to your config")
        text = "\n".join(str(e) for e in (err, err.__cause__) if e is not None).split("Config search path:")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(noise)]
        return " ".join(dict.fromkeys(lines))[:400] or type(err).__name__
    return None


def output_dir_problem(argv: list[str]) -> str | None:
    """Why hydra.run.dir= / hydra.sweep.dir= cannot be a run folder (a file, under a file, not writable), if so."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            return f"{key}={value}: is a file, not a folder"
        parent = path
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            return f"{key}={value}: cannot be created: {parent} is a file"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{key}={value}: folder {parent} is not writable; choose another {key}"
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except (DataError, ConfigError) as err:  # bad input: one clear line, no traceback
        log.error("%s", err)
        sys.exit(f"eqn: error: {err}")
    except Pruned as err:  # a search trial stopped by the pruner: recorded by the sweeper, not a failure
        log.info("%s", err)
        return None
    except Interrupted as err:
        message = f"eqn: {err}. Finished stages are kept; {resume_hint()}"
        log.error("%s", message)
        print(message, file=sys.stderr, flush=True)
        sys.exit(128 + err.signum)
    except Exception:
        log.error("eqn: the run failed (traceback below). %s", resume_hint())
        raise
    from eqn.config import stage_plan

    return metrics.get(f"{stage_plan(cfg)[-1]}/val/f1_macro")  # the objective a Hydra sweeper optimises


def resume_hint() -> str:
    try:
        run_dir = HydraConfig.get().runtime.output_dir
    except ValueError:
        return "rerun the same command to resume."
    args = " ".join(a for a in sys.argv[1:] if not a.startswith("hydra.run.dir="))
    return f"to resume, rerun: python -m eqn.run {args} hydra.run.dir={run_dir}".replace("  ", " ")


if __name__ == "__main__":
    main()
