"""eqn's Hydra sweeper for Optuna studies (`hydra/sweeper=eqn_optuna`, used by conf/hparams_search/*).

The official hydra-optuna-sweeper pins optuna<3; this one is small, uses a maintained Optuna, launches every trial
through the configured launcher (basic, joblib, submitit/SLURM) and keeps the study resumable in the sweep dir.
The logic lives in eqn/search.py; heavy imports happen only when a sweep starts.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class EqnOptunaSweeperConf:
    _target_: str = "hydra_plugins.eqn_optuna_sweeper.eqn_optuna_sweeper.EqnOptunaSweeper"
    study_name: str = "eqn"
    objective: str = "{last}/val/f1_macro"  # a validation figure of metrics.json; {last} = the pipeline's last stage
    direction: str = "maximize"
    n_trials: int = 20  # finished (complete or pruned) trials the study ends with
    n_jobs: Optional[int] = None  # trials launched at once; default: the launcher's n_jobs, else 1
    seed: int = 0  # TPE sampler seed
    n_startup_trials: int = 5  # TPE: random trials before the model-based ones
    pruner: Dict[str, Any] = field(
        default_factory=lambda: {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}
    )
    max_failures: int = 3  # stop (non-zero exit) after this many failed trials
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="eqn_optuna", node=EqnOptunaSweeperConf, provider="eqn")


class EqnOptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------ checks before any trial
    def compose(self, arguments: Sequence[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(arguments))

    def checked(self, arguments: List[str]):
        from hydra.errors import HydraException

        from eqn import search
        from eqn.config import stage_plan, validate
        from eqn.errors import ConfigError

        o = self.options
        try:
            space = search.parse_space(OmegaConf.to_container(OmegaConf.create(dict(o["params"] or {}))))
            if o["direction"] not in ("maximize", "minimize"):
                raise ConfigError(f"hydra.sweeper.direction={o['direction']!r}: choose maximize or minimize")
            if o["n_trials"] < 1:
                raise ConfigError(f"hydra.sweeper.n_trials={o['n_trials']}: must be at least 1")
            if o["pruner"].get("name", "none") not in ("median", "none"):
                raise ConfigError(f"hydra.sweeper.pruner.name={o['pruner'].get('name')!r}: choose median or none")
            cfg = None
            for p in space:  # every key must exist in the config, at both ends of its range
                for value in [p.low, p.high] if p.choices is None else p.choices:
                    try:
                        cfg = self.compose([*arguments, search.override(p.key, value)])
                    except HydraException as err:
                        raise ConfigError(
                            f"hydra.sweeper.params.{p.key}: not a config key this run accepts "
                            f"({' '.join(str(err).split())[:200]})"
                        ) from None
                    validate(cfg)
            key = search.objective_key(o["objective"], stage_plan(cfg))
        except ConfigError as err:
            search.fail_line(str(err))
        return space, key

    # ------------------------------------------------------------------ the study
    def sweep(self, arguments: List[str]) -> Any:
        import warnings

        import optuna

        from eqn import search
        from eqn.interrupt import fault_point

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        o = self.options
        space, objective = self.checked(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        journal = (sweep_dir / search.JOURNAL).resolve()
        pruner = search.make_pruner(o["pruner"])
        prune_args = [
            f"search.pruner={o['pruner'].get('name', 'none')}",
            f"search.pruner_startup_trials={int(o['pruner'].get('n_startup_trials', 3))}",
            f"search.pruner_warmup_steps={int(o['pruner'].get('n_warmup_steps', 1))}",
        ]
        study = optuna.create_study(
            study_name=o["study_name"],
            storage=search.journal_storage(journal),
            direction=o["direction"],
            load_if_exists=True,
            pruner=pruner,
        )
        # seeded, and advanced by the trials already in the study: a resumed study does not redraw its first trials
        study.sampler = optuna.samplers.TPESampler(
            seed=o["seed"] + len(study.trials), n_startup_trials=o["n_startup_trials"]
        )
        self.requeue_interrupted(study)
        n_jobs = o["n_jobs"] or int(OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1) or 1)
        distributions = {p.key: p.distribution() for p in space}
        finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        failures, job_idx = 0, len(study.trials)
        log.info(
            "study %s in %s: %d of %d trials finished", o["study_name"], journal, self.finished(study), o["n_trials"]
        )
        while (left := o["n_trials"] - self.finished(study)) > 0:
            trials = [study.ask(distributions) for _ in range(min(max(1, n_jobs), left))]
            batch = []
            for trial in trials:
                subdir = trial.user_attrs.get("subdir") or f"trial_{trial.number:04d}"
                trial.set_user_attr("subdir", subdir)
                batch.append(
                    [
                        *arguments,
                        *(search.override(k, v) for k, v in trial.params.items()),
                        f"hydra.sweep.subdir={subdir}",
                        f"search.journal={journal}",
                        f"search.study={o['study_name']}",
                        f"search.trial_id={trial._trial_id}",
                        f"search.metric={objective}",
                        *prune_args,
                    ]
                )
            started = time.time()
            results = self.launcher.launch(batch, initial_job_idx=job_idx)
            job_idx += len(batch)
            for trial, result in zip(trials, results):
                run_dir = sweep_dir / trial.user_attrs["subdir"]
                value = search.read_metric(run_dir, objective)
                if value is not None:
                    study.tell(trial, value)
                elif (run_dir / "pruned.json").exists():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    failures += 1
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.error("trial %d failed (%s); see %s", trial.number, self.failure(result), run_dir)
                fault_point(f"search:trial{trial.number}")
            log.info(
                "%d trials in %.0f s; %d of %d finished",
                len(batch),
                time.time() - started,
                self.finished(study),
                o["n_trials"],
            )
            search.write_outputs(study, space, sweep_dir, self.rerun_args(arguments), objective, announce=False)
            if failures >= o["max_failures"]:
                search.fail_line(
                    f"{failures} trials failed (limit hydra.sweeper.max_failures={o['max_failures']}); "
                    f"the study so far is in {sweep_dir} (rerun the same command to continue)"
                )
        search.write_outputs(study, space, sweep_dir, self.rerun_args(arguments), objective)
        return [t for t in study.trials if t.state in finished_states]

    def rerun_args(self, arguments: Sequence[str]) -> List[str]:
        """A single run of one trial's setting: the groups the study composed (its presets included) and the
        user's overrides, without the search itself."""
        choices = OmegaConf.to_container(self.config.hydra.runtime.choices)
        names = ("data", "model", "pipeline", "regression", "experiment")
        groups = [f"{g}={choices[g]}" for g in names if choices.get(g)]
        return [*groups, *(a for a in arguments if a.split("=")[0].lstrip("+~") not in ("hparams_search", *names))]

    @staticmethod
    def finished(study) -> int:
        import optuna

        return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)

    @staticmethod
    def requeue_interrupted(study) -> None:
        """Trials left running by a killed sweep: failed, and asked again with the same parameters in the same run
        dir (where eqn resumes from the trial's last checkpoint)."""
        import optuna

        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(dict(t.params), user_attrs={"subdir": t.user_attrs.get("subdir"), "rerun_of": t.number})
            log.info("trial %d was interrupted: it is rerun in %s", t.number, t.user_attrs.get("subdir"))

    @staticmethod
    def failure(result) -> str:
        try:
            result.return_value  # noqa: B018  (raises the job's exception)
        except BaseException as err:  # noqa: BLE001
            return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        return "no metrics.json"
