"""Hyperparameter search: an Optuna study run by Hydra's multirun (`python -m eqn.run -m hparams_search=<name>`).

The sweeper (hydra_plugins/eqn_optuna_sweeper) asks Optuna for trials, launches each as an ordinary eqn run through
the configured launcher (basic, joblib or SLURM), and tells Optuna the trial's validation figure read from its
metrics.json. The study lives in the sweep dir (`optuna.journal`, Optuna's journal storage: safe for several
processes, also on a shared filesystem), so the same command rerun after a kill continues it: finished trials are
kept, an interrupted trial is rerun in its own run dir (where eqn resumes from its last checkpoint), and the study
ends with exactly `n_trials` finished (complete or pruned) trials. Inside a trial, `PruneTrial` reports the
per-epoch validation figure and stops a hopeless trial (recorded as pruned, not failed).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqn.errors import ConfigError
from eqn.io import atomic_path, write_text

log = logging.getLogger(__name__)
JOURNAL = "optuna.journal"
RULES = ("tuned", "fixed", "argmax")
METRICS = ("f1_macro", "f1_micro", "f1_weighted", "accuracy", "mse", "mae", "gold_mean", "nongold_mean")


class Pruned(Exception):
    """A trial stopped by the pruner: the run ends early, and the study records it as pruned."""


@dataclass
class Param:
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None

    def distribution(self):
        import optuna

        if self.type == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.CategoricalDistribution(self.choices)


def parse_space(params: dict | None) -> list[Param]:
    """The search space of hydra.sweeper.params, checked: one line per mistake, before any trial."""
    if not params:
        raise ConfigError("hparams_search: hydra.sweeper.params is empty; declare at least one key to search")
    space = []
    for key, spec in params.items():
        where = f"hydra.sweeper.params.{key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
        kind = spec.get("type")
        unknown = sorted(set(spec) - {"type", "low", "high", "log", "step", "choices"})
        if kind not in ("float", "int", "categorical") or unknown:
            raise ConfigError(
                f"{where}: type must be float, int or categorical"
                + (f"; unknown field(s) {unknown}" if unknown else f", got {kind!r}")
            )
        if kind == "categorical":
            choices = list(spec.get("choices") or [])
            if not choices:
                raise ConfigError(f"{where}: a categorical parameter needs at least one choice")
            space.append(Param(key, kind, choices=choices))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"{where}: low and high must be numbers, got low={low!r} high={high!r}")
        assert low is not None and high is not None  # numbers (checked above)
        if low > high:
            raise ConfigError(f"{where}: low={low} is greater than high={high}")
        log_scale = bool(spec.get("log", False))
        if log_scale and low <= 0:
            raise ConfigError(f"{where}: a log range must lie above 0, got low={low}")
        if kind == "int" and (int(low) != low or int(high) != high):
            raise ConfigError(f"{where}: an int parameter needs whole-number bounds, got {low}..{high}")
        space.append(
            Param(
                key,
                kind,
                float(low) if kind == "float" else int(low),
                float(high) if kind == "float" else int(high),
                log_scale,
                spec.get("step"),
            )
        )
    return space


def objective_key(objective: str, plan: list[str]) -> str:
    """`{last}/val/f1_macro` -> `eqn/val/f1_macro` for this pipeline; a test figure or an unreported one is refused."""
    key = objective.replace("{last}", plan[-1])
    parts = key.split("/")
    if len(parts) < 3 or parts[0] not in plan:
        raise ConfigError(
            f"hydra.sweeper.objective={objective!r}: no stage of this pipeline ({', '.join(plan)}) "
            "reports it; use <stage>/val/<metric>, e.g. {last}/val/f1_macro"
        )
    if parts[1] != "val":
        raise ConfigError(
            f"hydra.sweeper.objective={objective!r}: a search selects on validation figures only "
            "(<stage>/val/<metric>), never on test"
        )
    metric = "/".join(parts[2:])
    rule, _, name = metric.rpartition("/")
    if name not in METRICS or rule not in ("", *RULES) or (name in METRICS[4:] and parts[0].startswith("baseline")):
        raise ConfigError(
            f"hydra.sweeper.objective={objective!r}: {parts[0]} does not report {metric!r} (metrics: "
            f"{', '.join(METRICS)}, optionally after a rule: {', '.join(RULES)})"
        )
    return key


def override(key: str, value: Any) -> str:
    if isinstance(value, float):
        value = repr(value)
    elif value is None:
        value = "null"
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"{key}={value}"


# ------------------------------------------------------------------------------ inside a trial (eqn/callbacks.py)


def make_pruner(spec: dict):
    import optuna

    if spec.get("name", "none") == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 3)), n_warmup_steps=int(spec.get("n_warmup_steps", 1))
        )
    return optuna.pruners.NopPruner()


def journal_storage(path: str | Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


# ------------------------------------------------------------------------------ the study's outputs


def write_outputs(
    study, space: list[Param], sweep_dir: Path, base_args: list[str], objective: str, announce: bool = True
) -> None:
    """optimization_results.yaml (the official plugin's layout), trials.csv, the two figures, the best command."""
    import optuna
    import yaml

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = []
    for t in study.trials:
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                **{p.key: t.params.get(p.key) for p in space},
                "seconds": t.duration.total_seconds() if t.duration else None,
                "run_dir": t.user_attrs.get("subdir"),
            }
        )
    with atomic_path(sweep_dir / "trials.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["number", "state", "value", *[p.key for p in space], "seconds", "run_dir"]
        )
        writer.writeheader()
        writer.writerows(rows)
    if not done:
        return
    best = study.best_trial
    write_text(
        sweep_dir / "optimization_results.yaml",
        yaml.safe_dump(
            {
                "name": "optuna",
                "objective": objective,
                "direction": study.direction.name.lower(),
                "best_params": dict(best.params),
                "best_value": float(best.value),
                "best_trial": best.number,
                "best_run_dir": best.user_attrs.get("subdir"),
            },
            sort_keys=False,
        ),
    )
    figures(study, sweep_dir)
    command = " ".join(
        [
            "python -m eqn.run",
            *map(shlex.quote, base_args),
            *(shlex.quote(override(k, v)) for k, v in best.params.items()),
        ]
    )
    if not announce:
        return
    log.info("best trial %d: %s = %.4f; rerun its configuration with: %s", best.number, objective, best.value, command)
    print(
        f"best trial {best.number}: {objective} = {best.value:.4f}\nrerun the best configuration: {command}", flush=True
    )


def figures(study, sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    for name, draw in (
        ("optimization_history", ov.plot_optimization_history),
        ("param_importances", ov.plot_param_importances),
    ):
        try:
            ax: Any = draw(study)  # an Axes, or an array of them
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # too few trials for importances
            log.info("no %s figure yet: %s", name, str(err).splitlines()[0][:120])
            continue
        fig = ax if hasattr(ax, "savefig") else getattr(ax, "figure", None) or ax.flat[0].figure
        with atomic_path(sweep_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def read_metric(run_dir: Path, key: str) -> float | None:
    try:
        value = json.loads((run_dir / "metrics.json").read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if finite(value) else None


def fail_line(message: str) -> None:
    log.error("%s", message)
    sys.exit(f"eqn: error: {message}")
