"""The pipeline: baseline | coeqn -> regress -> eqn (stages in eqn/stages.py), with the run directory as contract.

run_dir/
  config.yaml             resolved config          fingerprint.json   config + data hash (resume guard)
  tokenizer.json          the text encoder         metrics.json       "<stage>/<split>/<metric>" -> float
  stages/<stage>/         Lightning's best.ckpt / last.ckpt, done.json once the stage is evaluated
  stages/<stage>/test_scores.safetensors           test scores, gold and thresholds (paired bootstrap in eqn.report)
  stages/regress<r>/targets.safetensors            relabeled_train.csv (last regression round)
  checkpoints/<stage>.ckpt  self-contained: weights, tuned thresholds, labels, tokenizer, model config
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import DictConfig, OmegaConf

from eqn.config import stage_plan
from eqn.data.datamodule import EQNDataModule
from eqn.errors import ConfigError
from eqn.interrupt import fault_point
from eqn.io import digest, read_json, write_json, write_text
from eqn.ownership import (
    LEDGER,
    changed_entries,
    clean_temps,
    forbidden_folder,
    foreign_entries,
    owned_entry,
    owns_file,
    owns_folder,
    remove_owned,
    writing_run,
)
from eqn.stages import RunContext, artifact_name, fit, regress

log = logging.getLogger(__name__)
# The keys that change a run's results: the resume fingerprint hashes these (and the data files), nothing else,
# so logging, paths, progress bars or worker counts may change between an interrupted run and its resume.
RESULT_KEYS = ("seed", "model",
               *(f"data.{k}" for k in ("name", "tokenizer", "batch_size", "max_length", "max_train_samples",
                                       "max_eval_samples", "seed", "split_seed", "val_from_train", "bucket_batches",
                                       "scale", "on_bad_rows", "drop_empty_text", "val_fraction", "test_fraction",
                                       "path", "train_path", "val_path", "test_path", "text_column", "label_column",
                                       "id_column", "label_separator", "labels", "multi_label")),
               *(f"pipeline.{k}" for k in ("name", "rounds", "refit_from", "scale", "floor", "clip", "regress_val",
                                           "monitor", "budget", "threshold")),
               *(f"trainer.{k}" for k in ("max_epochs", "devices", "num_nodes", "precision", "gradient_clip_val",
                                          "accumulate_grad_batches", "val_check_interval", "limit_train_batches",
                                          "limit_val_batches", "deterministic")))


def result_config(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True)
    out = {}
    for key in RESULT_KEYS:
        node = container
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    regression = container.get("regression") or {}
    if regression.get("name", "offline") != "offline":  # offline runs keep the fingerprint they had before
        out.update({f"regression.{k}": v for k, v in sorted(regression.items())})
    if isinstance(out.get("trainer.devices"), list):  # which GPUs a job got does not change its results
        out["trainer.devices"] = len(out["trainer.devices"])
    return out


class Pipeline(RunContext):
    """baseline | coeqn -> regress -> eqn over one run dir: opens the run (data + resume guard), runs the stages."""

    # ------------------------------------------------------------------ top level
    def open(self) -> EQNDataModule:
        """Read the data and check that this run dir may hold this run; only then write the config."""
        cfg = self.cfg
        self.check_run_dir()
        seed_everything(cfg.seed, workers=True)
        dm = self.build_datamodule()
        self.check_fingerprint(dm)
        fault_point("open")
        with self.writing():
            write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            write_text(self.run_dir / "tokenizer.json", dm.encoder.to_str())
        return dm

    def writing(self):
        """What eqn writes meanwhile under the run dir is recorded as this run's (restart removes only that)."""
        return writing_run(self.run_dir, getattr(self, "run_tag", None) or self.run_id() or LEGACY)

    def run(self, dm: EQNDataModule | None = None) -> dict[str, float]:
        dm = dm if dm is not None else self.open()
        with self.writing():
            return self._run(dm)

    def _run(self, dm: EQNDataModule) -> dict[str, float]:
        cfg = self.cfg
        self.metrics.update({"data/skipped_rows": float(dm.data.skipped_rows),
                             **{f"data/{s}_rows": float(len(dm.split(s))) for s in ("train", "val", "test")}})
        started = time.perf_counter()
        stages = stage_plan(cfg)
        previous: Path | None = None
        for i, stage in enumerate(stages):
            if stage.startswith("baseline"):
                previous = fit(self, stage, dm, "bce" if dm.multi_label else "ce")
                continue
            if cfg.regression.name in ("progressive", "teacher"):
                previous = self.fit_regressing(dm)
                continue
            if i > 0:
                regress(self, dm, previous, round_=i, last=(i == len(stages) - 1))
            init = previous if (i > 0 and cfg.pipeline.refit_from == "coeqn") else None
            uses = artifact_name(cfg, i) if i > 0 else None
            previous = fit(self, stage, dm, "eqn", init_from=init, uses_artifact=uses)
        self.metrics["time/pipeline_s"] = time.perf_counter() - started
        if not self.is_main:
            return self.metrics
        if cfg.pipeline.analyze and cfg.pipeline.name != "baseline":
            from eqn.figures import analyze_run

            fault_point("analysis")
            analyze_run(self.run_dir, metrics=self.metrics)
        fault_point("metrics")
        write_json(self.run_dir / "metrics.json", self.metrics)  # written last: the run is complete
        self.summarise(stages)
        return self.metrics

    def fit_regressing(self, dm: EQNDataModule) -> Path:
        """regression=progressive|teacher: one EQN training whose targets regress as it goes, from its own
        previous-epoch predictions or from teachers'; relabeled_train.csv holds the targets of its last epoch."""
        from eqn.regression import LOSSES, ProgressiveRegression, TeacherRegression
        from eqn.relabeled import write_intensity_csv

        p, r = self.cfg.pipeline, self.cfg.regression
        args = (dm.targets, dm.gold["train"], p.scale, p.floor, p.clip, r.alpha, r.start,
                int(self.cfg.trainer.max_epochs), r.schedule)
        callback = (TeacherRegression(self.teacher_targets(dm), *args) if r.name == "teacher"
                    else ProgressiveRegression(*args))

        def relabeled() -> None:  # before the stage is marked done: the targets of its last epoch
            if p.save_relabeled:
                split = dm.split("train")
                write_intensity_csv(self.run_dir / "relabeled_train.csv", {"id": split.ids, "text": split.texts},
                                    dm.targets, dm.label_names)
                fault_point("progressive:csv")
                if p.export:  # relabeled/ (datasets) + relabeled_train.parquet, with a dataset card
                    from eqn.relabeled import dataset_card, hf_dataset, write_dataset

                    dataset = hf_dataset(split.ids, split.texts, dm.targets, dm.label_names, dm.gold["train"])
                    how = ("(1 - alpha) x its all-labels target (0) + alpha x the model's own prediction of the epoch "
                           "before (progressive label regression)" if r.name == "progressive" else
                           "(1 - alpha) x its all-labels target (0) + alpha x the mean intensity of the teacher "
                           f"models {list(r.teachers)}") + f", clipped to [0, {{scale:g}}], alpha = {r.alpha:g} at the end"
                    write_dataset(self.run_dir, dataset, dataset_card(
                        dm.name, dm.label_names, p.scale, f"{self.cfg.model.name} EQN, regression={r.name}",
                        self.metrics, how))

        # the checkpoint rule chooses among the epochs trained on regressed targets: the epochs before `start` are
        # plain all-labels (CoEQN) training, and validation MSE against the hard 0/10 targets favours them (it rises
        # once targets soften), so without this every progressive run kept its CoEQN epoch whatever alpha
        return fit(self, "eqn", dm, LOSSES[r.loss], regression=callback, before_done=relabeled, select_from=r.start)

    def teacher_targets(self, dm: EQNDataModule):
        """The teachers' intensities for the training rows, computed once (stages/teacher/targets.safetensors)."""
        import torch

        from eqn.io import load_tensors, save_tensors
        from eqn.regression import teacher_intensities

        path = self.run_dir / "stages" / "teacher" / "targets.safetensors"
        if path.exists():
            return load_tensors(path)[0]["train"]
        teacher = teacher_intensities(list(self.cfg.regression.teachers), dm.split("train").texts, dm.label_names,
                                      self.cfg.pipeline.scale)
        if self.is_main:
            save_tensors(path, {"train": teacher.float()}, {"teachers": list(self.cfg.regression.teachers)})
        fault_point("teacher:predicted")
        return torch.as_tensor(teacher)

    def summarise(self, stages: list[str]) -> None:
        for stage in stages:
            m = self.metrics
            line = (f"{stage:>9} test: f1_macro={m[f'{stage}/test/f1_macro']:.4f} "
                    f"f1_micro={m[f'{stage}/test/f1_micro']:.4f} accuracy={m[f'{stage}/test/accuracy']:.4f}")
            print(line, flush=True)
            log.info(line)
        print(f"outputs: {self.run_dir}\nmetrics: {self.run_dir / 'metrics.json'}", flush=True)

    # ------------------------------------------------------------------ building
    def build_datamodule(self) -> EQNDataModule:
        cfg = self.cfg
        saved = self.run_dir / "tokenizer.json"
        encoder = saved.read_text() if saved.exists() and not cfg.pipeline.restart else None
        dm = instantiate(cfg.data, encoder=encoder, _convert_="all")
        dm.prepare()
        return dm

    # ------------------------------------------------------------------ resume guard
    def fingerprint(self, dm: EQNDataModule) -> str:
        return digest(result_config(self.cfg), dm.data.files)

    def check_fingerprint(self, dm: EQNDataModule) -> None:
        path = self.run_dir / "fingerprint.json"
        current = self.fingerprint(dm)
        old = read_json(path)["fingerprint"] if path.exists() else None
        if old not in (None, current) and not self.cfg.pipeline.restart:
            raise ConfigError(
                f"{self.run_dir} holds a run with a different config or data (fingerprint {old[:12]} != "
                f"{current[:12]}); use another hydra.run.dir, or pipeline.restart=true to discard it")
        if not self.is_main:
            return
        run_id = self.run_id()
        if run_id is None:  # from now on this folder is an eqn run dir: it holds this run's record
            import uuid

            run_id = uuid.uuid4().hex
            (self.run_dir / LEDGER).parent.mkdir(exist_ok=True)
            (self.run_dir / LEDGER).touch()  # the run dir's own ledger records the run's files (and this record)
            write_json(self.run_dir / RUN_RECORD, {"run": run_id, "format": "eqn-run/1"})
        self.run_tag = run_id
        if self.cfg.pipeline.restart:
            log.warning("pipeline.restart: discarding the finished stages in %s (only files this run wrote)",
                        self.run_dir)
            only = None if run_id == LEGACY else run_id  # a legacy run's files carry no run id: all eqn's
            for name in RUN_OUTPUTS:
                target = self.run_dir / name
                if target.is_dir():
                    remove_owned(target, run=only)
                elif name not in KEPT_ON_RESTART and owns_file(target):
                    remove_owned(target, run=only)
        with self.writing():
            write_json(path, {"fingerprint": current})

    def run_id(self) -> str | None:
        """This run dir's run: the id in its record (.eqn/run.json, eqn's own), LEGACY for a run written before
        runs had records (its fingerprint.json is eqn's), None for a folder that holds no eqn run."""
        record = self.run_dir / RUN_RECORD
        entry = owned_entry(record) if record.is_file() else None
        if entry is not None:
            try:
                return str(read_json(record)["run"])
            except (ValueError, KeyError, TypeError):
                return None
        if not record.exists() and owns_file(self.run_dir / "fingerprint.json"):
            return LEGACY
        return None

    def check_run_dir(self) -> None:
        """Before any work, before anything is written: the run dir may never be the working directory (or a parent
        of it), home, a filesystem root or a folder holding the data; a folder that holds no eqn run (no run record
        of eqn's) is used only if empty or with pipeline.reuse_dir=true, and then none of the names eqn writes may
        exist in it; in an eqn run dir every file eqn writes must be eqn's and unchanged, and a restart may not
        delete a teacher it needs."""
        if not self.is_main:
            return
        cfg = self.cfg
        why = forbidden_folder(self.run_dir, self.input_paths())
        if why:
            raise ConfigError(f"{self.run_dir}: {why}; eqn will not use it as a run dir (choose another "
                              "hydra.run.dir)")
        if not self.run_dir.exists():
            self.probe_writable()
            return
        if self.run_id() is None:
            present = sorted(p.name for p in self.run_dir.iterdir() if not hydra_own(p))
            if present and not cfg.pipeline.reuse_dir:
                raise ConfigError(f"{self.run_dir} is not empty and holds no eqn run ({', '.join(present[:5])}"
                                  f"{', ...' if len(present) > 5 else ''}); choose a new hydra.run.dir, or pass "
                                  "pipeline.reuse_dir=true to put eqn's files beside yours")
            clash = [n for n in present if n in RUN_OUTPUTS or n in (".hydra", log_name())]
            if clash:
                raise ConfigError(f"{self.run_dir}: {', '.join(clash)} would be written by eqn but already exist "
                                  "and are not eqn's; choose another hydra.run.dir")
            self.probe_writable()
            return
        self.probe_writable()
        clean_temps(self.run_dir, recursive=True)  # what killed runs left: eqn's own temporaries
        pending = self.run_dir / ".hydra" / "pending"  # an older eqn's record of a refused or killed start
        if pending.is_dir() and {p.name for p in pending.iterdir()} <= {"config.yaml", "hydra.yaml", "overrides.yaml"}:
            shutil.rmtree(pending)
        for name in RUN_OUTPUTS:
            target = self.run_dir / name
            if not (target.exists() or target.is_symlink()):
                continue
            if name in OWN_FOLDERS:
                bad = foreign_entries(target) if owns_folder(target) or (target / LEDGER).is_file() else [target]
            elif name in CHECKED_DIRS:
                bad = [f for f in target.rglob("*") if f.is_file() and ".eqn" not in f.parts and not owns_file(f)]
                bad += [f for f in target.iterdir() if name == "export" and f.is_dir() and not owns_folder(f)
                        and f.name != ".eqn"]
            elif name in DIRS:
                bad = [] if target.is_dir() and not target.is_symlink() else [target]
                for stage in stage_plan(cfg) if name == "stages" else []:
                    bad += [f for f in (target / stage).glob("*.ckpt") if not owns_file(f)]
            else:
                bad = [] if owns_file(target) else [target]
            bad = bad or (changed_entries(target) if target.is_dir() else [])
            if bad:
                raise ConfigError(f"{bad[0]}: eqn writes here but found a file it did not write (or one changed "
                                  "since); move it away or choose another hydra.run.dir")
        if cfg.pipeline.restart and cfg.regression.name == "teacher":
            for teacher in cfg.regression.teachers:
                path = Path(teacher).expanduser()
                if path.exists() and Path(os.path.realpath(path)).is_relative_to(os.path.realpath(self.run_dir)):
                    raise ConfigError(f"regression.teachers: {teacher} lies in the run dir that "
                                      "pipeline.restart=true would clear; copy or export it elsewhere first")

    def input_paths(self) -> list[str]:
        """The files and folders this run reads: a run dir may not hold them."""
        d = self.cfg.data
        paths = [d.get(k) for k in ("path", "train_path", "val_path", "test_path") if d.get(k)]
        paths += [str(Path(self.cfg.paths.data_dir) / str(d.name))] if d.get("name") else []
        return [p for p in paths if p and Path(p).expanduser().exists()]


# What a run writes at the top of its run dir. Folders marked DIRS hold files of eqn's own (recorded in the run's
# ledger) and Lightning's; OWN_FOLDERS are replaced as a whole and carry their own ledger.
DIRS = ("stages", "checkpoints", "analysis", "logs", "export", "relabeled", "hub_dataset", "mlruns", "wandb")
OWN_FOLDERS = ("relabeled", "hub_dataset")
CHECKED_DIRS = ("checkpoints", "analysis", "export")  # every file in them is eqn's (Lightning writes elsewhere)
KEPT_ON_RESTART = ("config.yaml", "fingerprint.json")
RUN_RECORD = Path(".eqn") / "run.json"  # an eqn run dir holds this: the id its files are recorded under
LEGACY = "legacy"  # a run dir written before runs had records: its files carry no run id
RUN_OUTPUTS = ("config.yaml", "tokenizer.json", "fingerprint.json", "metrics.json", "relabeled_train.csv",
               "relabeled_train.parquet", *DIRS)


def hydra_own(path: Path) -> bool:
    """eqn's own lock and ledger, which any eqn writer may leave in a folder (eqn.run writes nothing else into a
    run dir before accepting it: Hydra's record and job log come after, see eqn.run)."""
    return path.name in (".eqn", ".lock")


def log_name() -> str:
    """The job log eqn.run writes into an accepted run dir (Hydra's name for it: <job name>.log)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return f"{HydraConfig.get().job.name}.log"
    except ValueError:
        return "run.log"
