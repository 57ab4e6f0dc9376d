"""The pipeline: open the run (its run dir's checks and resume guard, the data), then execute the steps of its plan
(baseline | coeqn -> regress -> eqn | one regressing training; eqn/stages.py), analyse, write metrics.json last."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import DictConfig, OmegaConf

from eqn.config import stage_plan
from eqn.data.datamodule import EQNDataModule
from eqn.interrupt import fault_point
from eqn.io import write_json, write_text
from eqn.rundir import RunDir
from eqn.stages import RunContext, fit, plan, regress

log = logging.getLogger(__name__)


class Pipeline(RunContext):
    """One run over one run dir (self.rundir: what eqn may do there)."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        super().__init__(cfg, run_dir)
        self.rundir = RunDir(cfg, run_dir)

    def open(self) -> EQNDataModule:
        """Check that the run dir may hold this run, read the data, guard the resume; only then write the config."""
        self.rundir.check(self.is_main)
        seed_everything(self.cfg.seed, workers=True)
        dm = self.build_datamodule()
        self.rundir.guard(dm.data.files, self.is_main)
        fault_point("open")
        with self.rundir.writing():
            write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
            write_text(self.run_dir / "tokenizer.json", dm.encoder.to_str())
        return dm

    def run(self, dm: EQNDataModule | None = None) -> dict[str, float]:
        dm = dm if dm is not None else self.open()
        with self.rundir.writing():
            self.metrics.update(
                {
                    "data/skipped_rows": float(dm.data.skipped_rows),
                    **{f"data/{s}_rows": float(len(dm.split(s))) for s in ("train", "val", "test")},
                }
            )
            started, previous = time.perf_counter(), None
            for step in plan(self.cfg, dm.multi_label):
                if step.kind == "regress":
                    assert previous is not None  # a regression follows the fit whose predictions it uses
                    regress(self, dm, previous, round_=step.round, last=step.last)
                    continue
                r = self.cfg.regression
                if step.regressing:  # best epoch chosen from `start` on: the earlier ones are plain CoEQN training
                    from eqn.regression import regression_callback

                    previous = fit(
                        self,
                        step.stage,
                        dm,
                        step.objective,
                        regression=regression_callback(self, dm),
                        select_from=r.start,
                    )
                    continue
                previous = fit(
                    self,
                    step.stage,
                    dm,
                    step.objective,
                    init_from=previous if step.refit else None,
                    uses_artifact=step.artifact,
                )
            self.metrics["time/pipeline_s"] = time.perf_counter() - started
            if self.is_main:
                self.finish()
        return self.metrics

    def finish(self) -> None:
        """The run's figures, then metrics.json (written last: the run is complete), then its summary."""
        if self.cfg.pipeline.analyze and self.cfg.pipeline.name != "baseline":
            from eqn.figures import analyze_run

            fault_point("analysis")
            analyze_run(self.run_dir, metrics=self.metrics)
        fault_point("metrics")
        write_json(self.run_dir / "metrics.json", self.metrics)
        for stage in stage_plan(self.cfg):
            m = self.metrics
            line = (
                f"{stage:>9} test: f1_macro={m[f'{stage}/test/f1_macro']:.4f} "
                f"f1_micro={m[f'{stage}/test/f1_micro']:.4f} accuracy={m[f'{stage}/test/accuracy']:.4f}"
            )
            print(line, flush=True)
            log.info(line)
        print(f"outputs: {self.run_dir}\nmetrics: {self.run_dir / 'metrics.json'}", flush=True)

    def build_datamodule(self) -> EQNDataModule:
        saved = self.run_dir / "tokenizer.json"
        encoder = saved.read_text() if saved.exists() and not self.cfg.pipeline.restart else None
        dm = instantiate(self.cfg.data, encoder=encoder, _convert_="all")
        dm.prepare()
        return dm
