"""A run directory: whether a folder may hold this run (checked before any work), the fingerprint that guards a
resume, what eqn owns there (the run's record, the files it wrote, restart's removal), the writability probe.

run_dir/
  config.yaml             resolved config          fingerprint.json   config + data hash (resume guard)
  tokenizer.json          the text encoder         metrics.json       "<stage>/<split>/<metric>" -> float
  stages/<stage>/         Lightning's best.ckpt / last.ckpt, done.json once the stage is evaluated
  stages/<stage>/test_scores.safetensors           test scores, gold and thresholds (paired bootstrap in eqn.report)
  stages/regress<r>/targets.safetensors            relabeled_train.csv (last regression round)
  checkpoints/<stage>.ckpt  self-contained: weights, tuned thresholds, labels, tokenizer, model config
  .eqn/run.json, .eqn/owned.jsonl                 the run's id; every file eqn wrote (eqn.ownership)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eqn.config import Config, as_dict, stage_plan
from eqn.errors import ConfigError
from eqn.io import digest, read_json, write_json
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

log = logging.getLogger(__name__)
SCHEME = 2  # fingerprint.json's "scheme": 2 = every schema field not marked result=False


def result_config(cfg: DictConfig) -> dict:
    """The settings that change a run's results, read from the schema itself (eqn.config.Config): every field
    counts unless its metadata says result=False (paths, logging, progress bars, workers, where it runs), and
    free-form nodes (a backbone, an optimizer, callbacks) count whole. So a new setting is never silently ignored
    when an interrupted run resumes."""
    out = result_fields(Config, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    devices = out.get("trainer", {}).get("devices")
    if isinstance(devices, list):  # which GPUs a job got does not change its results
        out["trainer"]["devices"] = len(devices)
    return out


def result_fields(schema: type, node: typing.Any) -> typing.Any:
    """`node` (a config container) reduced to the result-affecting fields of the dataclass `schema`."""
    if not isinstance(node, dict):
        return node
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        if f.metadata.get("result", True) is False:
            continue
        value = node.get(f.name)
        kind = hints.get(f.name)
        out[f.name] = result_fields(kind, value) if isinstance(kind, type) and dataclasses.is_dataclass(kind) else value
    return out


# The keys an older eqn hashed (fingerprint.json without "scheme"): a run dir it wrote resumes under this list.
LEGACY_RESULT_KEYS = (
    "seed",
    "model",
    *(
        f"data.{k}"
        for k in (
            "name",
            "tokenizer",
            "batch_size",
            "max_length",
            "max_train_samples",
            "max_eval_samples",
            "seed",
            "split_seed",
            "val_from_train",
            "bucket_batches",
            "scale",
            "on_bad_rows",
            "drop_empty_text",
            "val_fraction",
            "test_fraction",
            "path",
            "train_path",
            "val_path",
            "test_path",
            "text_column",
            "label_column",
            "id_column",
            "label_separator",
            "labels",
            "multi_label",
        )
    ),
    *(
        f"pipeline.{k}"
        for k in (
            "name",
            "rounds",
            "refit_from",
            "scale",
            "floor",
            "clip",
            "regress_val",
            "monitor",
            "budget",
            "threshold",
        )
    ),
    *(
        f"trainer.{k}"
        for k in (
            "max_epochs",
            "devices",
            "num_nodes",
            "precision",
            "gradient_clip_val",
            "accumulate_grad_batches",
            "val_check_interval",
            "limit_train_batches",
            "limit_val_batches",
            "deterministic",
        )
    ),
)


def legacy_result_config(cfg: DictConfig) -> dict:
    container = as_dict(cfg)
    out: dict[str, Any] = {}
    for key in LEGACY_RESULT_KEYS:
        node: Any = container
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    regression = container.get("regression") or {}
    if regression.get("name", "offline") != "offline":  # offline runs keep the fingerprint they had before
        out.update({f"regression.{k}": v for k, v in sorted(regression.items())})
    if isinstance(out.get("trainer.devices"), list):  # which GPUs a job got does not change its results
        out["trainer.devices"] = len(out["trainer.devices"])
    return out


# What a run writes at the top of its run dir. Folders marked DIRS hold files of eqn's own (recorded in the run's
# ledger) and Lightning's; OWN_FOLDERS are replaced as a whole and carry their own ledger.
DIRS = ("stages", "checkpoints", "analysis", "logs", "export", "relabeled", "hub_dataset", "mlruns", "wandb")
OWN_FOLDERS = ("relabeled", "hub_dataset")
CHECKED_DIRS = ("checkpoints", "analysis", "export")  # every file in them is eqn's (Lightning writes elsewhere)
KEPT_ON_RESTART = ("config.yaml", "fingerprint.json")
RUN_RECORD = Path(".eqn") / "run.json"  # an eqn run dir holds this: the id its files are recorded under
LEGACY = "legacy"  # a run dir written before runs had records: its files carry no run id
RUN_OUTPUTS = (
    "config.yaml",
    "tokenizer.json",
    "fingerprint.json",
    "metrics.json",
    "relabeled_train.csv",
    "relabeled_train.parquet",
    *DIRS,
)


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


class RunDir:
    """One run's directory and the rules eqn keeps there."""

    def __init__(self, cfg: DictConfig, path: str | Path):
        self.cfg, self.path = cfg, Path(path)
        self.run_tag: str | None = None  # this run's id once the guard has read or made its record

    def writing(self):
        """What eqn writes meanwhile under the run dir is recorded as this run's (restart removes only that)."""
        return writing_run(self.path, self.run_tag or self.run_id() or LEGACY)

    def fingerprint(self, files: list) -> str:
        """SHA-256 of every result-affecting setting (the schema's fields not marked otherwise) and the data files."""
        return digest(result_config(self.cfg), files)

    def guard(self, files: list, is_main: bool) -> None:
        """The resume guard: a run dir that holds a run of another config or data is refused (unless restarting,
        which removes this run's files); the first run makes the folder an eqn run dir (its record)."""
        path = self.path / "fingerprint.json"
        current = self.fingerprint(files)
        saved = read_json(path) if path.exists() else None
        old = saved["fingerprint"] if saved else None
        if saved and saved.get("scheme") != SCHEME:  # written by an eqn that hashed a fixed list of keys
            current_then = digest(legacy_result_config(self.cfg), files)
            old = current if old == current_then else old
        if old not in (None, current) and not self.cfg.pipeline.restart:
            raise ConfigError(
                f"{self.path} holds a run with a different config or data (fingerprint {old[:12]} != "
                f"{current[:12]}); use another hydra.run.dir, or pipeline.restart=true to discard it"
            )
        if not is_main:
            return
        run_id = self.run_id()
        if run_id is None:  # from now on this folder is an eqn run dir: it holds this run's record
            import uuid

            run_id = uuid.uuid4().hex
            (self.path / LEDGER).parent.mkdir(exist_ok=True)
            (self.path / LEDGER).touch()  # the run dir's own ledger records the run's files (and this record)
            write_json(self.path / RUN_RECORD, {"run": run_id, "format": "eqn-run/1"})
        self.run_tag = run_id
        if self.cfg.pipeline.restart:
            log.warning("pipeline.restart: discarding the finished stages in %s (only files this run wrote)", self.path)
            only = None if run_id == LEGACY else run_id  # a legacy run's files carry no run id: all eqn's
            for name in RUN_OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    remove_owned(target, run=only)
                elif name not in KEPT_ON_RESTART and owns_file(target):
                    remove_owned(target, run=only)
        with self.writing():
            write_json(path, {"fingerprint": current, "scheme": SCHEME})

    def run_id(self) -> str | None:
        """This run dir's run: the id in its record (.eqn/run.json, eqn's own), LEGACY for a run written before
        runs had records (its fingerprint.json is eqn's), None for a folder that holds no eqn run."""
        record = self.path / RUN_RECORD
        entry = owned_entry(record) if record.is_file() else None
        if entry is not None:
            try:
                return str(read_json(record)["run"])
            except (ValueError, KeyError, TypeError):
                return None
        if not record.exists() and owns_file(self.path / "fingerprint.json"):
            return LEGACY
        return None

    def check(self, is_main: bool = True) -> None:
        """Before any work, before anything is written: the run dir may never be the working directory (or a parent
        of it), home, a filesystem root or a folder holding the data; a folder that holds no eqn run (no run record
        of eqn's) is used only if empty or with pipeline.reuse_dir=true, and then none of the names eqn writes may
        exist in it; in an eqn run dir every file eqn writes must be eqn's and unchanged, and a restart may not
        delete a teacher it needs."""
        if not is_main:
            return
        cfg = self.cfg
        why = forbidden_folder(self.path, self.input_paths())
        if why:
            raise ConfigError(f"{self.path}: {why}; eqn will not use it as a run dir (choose another hydra.run.dir)")
        if not self.path.exists():
            self.probe_writable()
            return
        if self.run_id() is None:
            present = sorted(p.name for p in self.path.iterdir() if not hydra_own(p))
            if present and not cfg.pipeline.reuse_dir:
                raise ConfigError(
                    f"{self.path} is not empty and holds no eqn run ({', '.join(present[:5])}"
                    f"{', ...' if len(present) > 5 else ''}); choose a new hydra.run.dir, or pass "
                    "pipeline.reuse_dir=true to put eqn's files beside yours"
                )
            clash = [n for n in present if n in RUN_OUTPUTS or n in (".hydra", log_name())]
            if clash:
                raise ConfigError(
                    f"{self.path}: {', '.join(clash)} would be written by eqn but already exist "
                    "and are not eqn's; choose another hydra.run.dir"
                )
            self.probe_writable()
            return
        self.probe_writable()
        clean_temps(self.path, recursive=True)  # what killed runs left: eqn's own temporaries
        pending = self.path / ".hydra" / "pending"  # an older eqn's record of a refused or killed start
        if pending.is_dir() and {p.name for p in pending.iterdir()} <= {"config.yaml", "hydra.yaml", "overrides.yaml"}:
            shutil.rmtree(pending)
        for name in RUN_OUTPUTS:
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if name in OWN_FOLDERS:
                bad = foreign_entries(target) if owns_folder(target) or (target / LEDGER).is_file() else [target]
            elif name in CHECKED_DIRS:
                bad = [f for f in target.rglob("*") if f.is_file() and ".eqn" not in f.parts and not owns_file(f)]
                bad += [
                    f
                    for f in target.iterdir()
                    if name == "export" and f.is_dir() and not owns_folder(f) and f.name != ".eqn"
                ]
            elif name in DIRS:
                bad = [] if target.is_dir() and not target.is_symlink() else [target]
                for stage in stage_plan(cfg) if name == "stages" else []:
                    bad += [f for f in (target / stage).glob("*.ckpt") if not owns_file(f)]
            else:
                bad = [] if owns_file(target) else [target]
            bad = bad or (changed_entries(target) if target.is_dir() else [])
            if bad:
                raise ConfigError(
                    f"{bad[0]}: eqn writes here but found a file it did not write (or one changed "
                    "since); move it away or choose another hydra.run.dir"
                )
        if cfg.pipeline.restart and cfg.regression.name == "teacher":
            for teacher in cfg.regression.teachers:
                path = Path(teacher).expanduser()
                if path.exists() and Path(os.path.realpath(path)).is_relative_to(os.path.realpath(self.path)):
                    raise ConfigError(
                        f"regression.teachers: {teacher} lies in the run dir that "
                        "pipeline.restart=true would clear; copy or export it elsewhere first"
                    )

    def input_paths(self) -> list[str]:
        """The files and folders this run reads: a run dir may not hold them."""
        d = self.cfg.data
        paths = [d.get(k) for k in ("path", "train_path", "val_path", "test_path") if d.get(k)]
        paths += [str(Path(self.cfg.paths.data_dir) / str(d.name))] if d.get("name") else []
        return [p for p in paths if p and Path(p).expanduser().exists()]

    def probe_writable(self) -> None:
        """The run dir can be created and written (tried, not inferred: permission bits do not bind root)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".eqn-write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise ConfigError(
                f"run dir {self.path} is not writable ({err.strerror}); choose another hydra.run.dir"
            ) from None
