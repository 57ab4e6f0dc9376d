"""`python -m eqn.run model=bert data=goemotions`: compose the config, run the pipeline in the Hydra run dir."""
from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from eqn import config  # noqa: E402  (registers schemas and resolvers)
from eqn.io import ConfigError, DataError  # noqa: E402

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
    from eqn.pipeline import Pipeline

    quiet_lightning()
    config.validate(cfg)
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    if run_dir is None:
        run_dir = HydraConfig.get().runtime.output_dir
    return Pipeline(cfg, run_dir).run()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except (DataError, ConfigError) as err:  # bad input: one clear line, no traceback
        log.error("%s", err)
        sys.exit(f"eqn: error: {err}")
    final = "eqn" if cfg.pipeline.name == "eqn" else cfg.pipeline.name
    return metrics.get(f"{final}/val/f1_macro")  # the objective a Hydra sweeper optimises


if __name__ == "__main__":
    main()
