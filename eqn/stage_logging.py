"""One experiment-tracker run per stage (csv, wandb or none), always closed, even when the stage crashes."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from eqn.config import as_dict
from eqn.io import write_json

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def keep_logged_rows(logger: Any, resume: Path) -> None:
    """A resumed stage keeps its CSV log: Lightning's CSV writer deletes metrics.csv when it opens the folder again,
    so the rows of the epochs the resume does not redo (logged before last.ckpt's step) are written back first."""
    path = Path(logger.log_dir) / "metrics.csv"
    if getattr(rank_zero_only, "rank", 0) != 0 or not (resume.is_file() and path.is_file()):
        return
    import csv

    import torch

    step = int(torch.load(resume, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit() and int(r["step"]) < step]
    writer = logger.experiment  # Lightning's writer: opening it deletes the file
    writer.metrics = rows + writer.metrics
    logger.save()


class StageLogger:
    def __init__(self, cfg: DictConfig, run_dir: Path, stage: str):
        self.cfg, self.run_dir, self.stage = cfg, run_dir, stage
        self.lightning: Any = False

    @property
    def is_wandb(self) -> bool:
        return type(self.lightning).__name__ == "WandbLogger"

    def __enter__(self) -> "StageLogger":
        node = self.cfg.get("logger")
        if not node or "_target_" not in node:
            return self
        target = node["_target_"]
        if target.endswith("WandbLogger"):
            config = as_dict(self.cfg)
            config["git_commit"] = git_commit()
            config["overrides"] = _overrides()
            group = node.get("group") or default_group(self.cfg, self.run_dir)
            options = {k: v for k, v in as_dict(node).items() if k not in ("_target_", "group")}
            # built by hand: hydra's instantiate() reserves the keyword `config`, which wandb.init needs
            self.lightning = get_class(target)(
                **options,
                name=f"{self.cfg.run_name}-{self.stage}",
                job_type=self.stage,
                group=group,
                save_dir=str(self.run_dir),
                config=config,
                reinit="create_new",
            )
            run = self.lightning.experiment
            if getattr(rank_zero_only, "rank", 0) == 0 and getattr(
                run, "id", None
            ):  # where to find this stage's W&B run
                write_json(
                    self.run_dir / "stages" / self.stage / "wandb_run.json",
                    {
                        "id": run.id,
                        "name": run.name,
                        "group": run.group,
                        "job_type": run.job_type,
                        "mode": node.get("mode"),
                        "dir": str(getattr(run, "dir", "")),
                    },
                )
        elif target.endswith("CSVLogger") or target.endswith("TensorBoardLogger"):
            self.lightning = instantiate(node, save_dir=str(self.run_dir), name="logs", version=self.stage)
            if target.endswith("CSVLogger"):
                keep_logged_rows(self.lightning, self.run_dir / "stages" / self.stage / "last.ckpt")
        elif target.endswith("MLFlowLogger"):
            uri = node.get("tracking_uri")
            if not uri:  # a file store in the run dir (mlflow-skinny has no SQL store; mlflow asks for this opt-in)
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                uri = (self.run_dir / "mlruns").resolve().as_uri()
            self.lightning = instantiate(
                node,
                tracking_uri=uri,
                run_name=f"{self.cfg.run_name}-{self.stage}",
                tags={"stage": self.stage, "run_name": self.cfg.run_name},
            )
        else:
            self.lightning = instantiate(node)
        return self

    def log_results(self, stage: str, metrics: dict[str, float], label_names: list[str]) -> None:
        if not self.lightning:
            return
        flat = {k[len(stage) + 1 :]: v for k, v in metrics.items() if k.startswith(stage + "/")}
        self.lightning.log_metrics({k: v for k, v in flat.items() if "/f1/" not in k})
        if self.is_wandb:
            rows = [[name, flat.get(f"val/f1/{name}"), flat.get(f"test/f1/{name}")] for name in label_names]
            self.lightning.log_table(key="per_class_f1", columns=["label", "val_f1", "test_f1"], data=rows)

    def log_stage_outputs(self, stage: str, run_dir: Path, test_texts: list[str], samples: int = 50) -> None:
        """W&B: this stage's figures (label correlation, per-class F1, intensity distribution) as images, the
        correlation matrix and a sample of annotated test texts as tables, the exported model as an artifact."""
        if not self.is_wandb:
            return
        import wandb

        from eqn.figures import stage_figures

        figures, corr, scores, gold, names, thresholds = stage_figures(run_dir, stage)
        run = self.lightning.experiment
        run.log({f"figures/{name}": wandb.Image(str(path)) for name, path in figures.items()})
        run.log(
            {
                "tables/label_correlation": wandb.Table(
                    columns=["label", *names], data=[[n, *map(float, row)] for n, row in zip(names, corr)]
                )
            }
        )
        rows = []
        for i in range(min(samples, len(test_texts))):
            keep = (scores[i] >= thresholds) | (scores[i] == scores[i].max())
            top = sorted((j for j in range(len(names)) if keep[j]), key=lambda j: -float(scores[i][j]))
            rows.append(
                [
                    test_texts[i],
                    ",".join(names[j] for j in gold[i].nonzero().flatten().tolist()),
                    ",".join(names[j] for j in top),
                    *[round(float(v), 2) for v in scores[i]],
                ]
            )
        run.log({"tables/annotated_test_sample": wandb.Table(columns=["text", "gold", "emotions", *names], data=rows)})
        model = run_dir / "export" / stage
        if model.is_dir():
            artifact = wandb.Artifact(f"{self.cfg.run_name}-{stage}-model", type="model")
            artifact.add_dir(str(model))
            run.log_artifact(artifact)

    def log_artifact(self, path: Path, name: str, kind: str) -> None:
        if self.is_wandb:
            import wandb

            artifact = wandb.Artifact(name, type=kind)
            artifact.add_file(str(path))
            self.lightning.experiment.log_artifact(artifact)

    def use_artifact(self, name: str) -> None:
        """Lineage: this stage consumes `name`. Offline W&B cannot link artifacts; the name goes in the config."""
        if not self.is_wandb:
            return
        run = self.lightning.experiment
        run.config.update({"input_artifact": name}, allow_val_change=True)
        try:
            run.use_artifact(f"{name}:latest")
        except (TypeError, ValueError) as err:  # "Cannot use artifact when in offline mode"
            log.info("W&B lineage for %s recorded in the config only: %s", name, err)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.is_wandb:
            try:
                self.lightning.experiment.finish(exit_code=1 if exc_type else 0)
            except Exception as err:  # never hide the stage's own error
                log.warning("could not finish the W&B run: %s", err)
        elif self.lightning:
            self.lightning.finalize("failed" if exc_type else "success")


def default_group(cfg: DictConfig, run_dir: Path) -> str:
    """All stages of a pipeline share a group; so do all jobs of one Hydra sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"sweep-{Path(hc.sweep.dir).name}"
    except Exception:
        pass
    return f"{cfg.run_name}-{run_dir.name}"


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []
