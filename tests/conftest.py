import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import eqn.config  # noqa: E402,F401  (schemas + resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = Path(eqn.config.default_data_dir())


def compose_config(*overrides: str, tmp_path: Path | None = None):
    extra = []
    if tmp_path is not None:
        extra = [f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["trainer.enable_progress_bar=false", *extra, *overrides])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "goemotions" / "train.tsv").exists():
        pytest.fail(f"the original data files are expected under {SHARED_DATA} (set EQN_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small TextCNN EQN run on GoEmotions, shared by the annotation and analysis tests."""
    from eqn.run import run

    if not (SHARED_DATA / "goemotions" / "train.tsv").exists():
        pytest.fail(f"the original data files are expected under {SHARED_DATA} (set EQN_DATA_DIR)")
    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_config("data.max_train_samples=400", "data.max_eval_samples=200", "trainer.max_epochs=1",
                         "logger=none", tmp_path=tmp)
    run(cfg, run_dir=str(tmp / "run"))
    return tmp / "run"
