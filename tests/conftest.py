import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# W&B lists every installed package into each run it starts (0.2-0.4 s per stage's run; no test reads that list)
os.environ.setdefault("WANDB__SAVE_REQUIREMENTS", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: one thread per worker and per process it starts (two threads each on two
    # cores oversubscribe them and run several times slower)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import copy  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import eqn.config  # noqa: E402,F401  (schemas + resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = Path(eqn.config.default_data_dir())


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def compose_config(*overrides: str, tmp_path: Path | None = None):
    """The composed config (a fresh copy: composing the same overrides again in one process is served from memory),
    with the output and cache dirs under tmp_path unless the overrides set them."""
    cfg = copy.deepcopy(_composed(("trainer.enable_progress_bar=false", *overrides)))
    if tmp_path is not None:
        given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        for key, value in (("paths.output_dir", str(tmp_path)), ("paths.cache_dir", str(tmp_path / "cache"))):
            if key not in given:
                OmegaConf.update(cfg, key, value)
    return cfg


def needs(*names: str) -> None:
    """Skip, naming the missing folder, unless the original files of these datasets are in the data dir.
    GoEmotions is always there (embedded in the package) and health7 tests use a fixture."""
    missing = [SHARED_DATA / n for n in names if n not in ("goemotions", "health7") and not (SHARED_DATA / n).is_dir()]
    if missing:
        pytest.skip(
            f"needs the original dataset files in {', '.join(map(str, missing))} (not present; "
            "set EQN_DATA_DIR or run `python -m eqn.data download <name>`)"
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data dir; GoEmotions comes from it when present, else from the copy embedded in the package."""
    return SHARED_DATA


def tiny_base(folder: Path) -> Path:
    """A small randomly initialised BERT saved as a base encoder folder (weights + MiniLM's tokenizer files): a
    stand-in for the packaged all-MiniLM-L6-v2 wherever a test needs a base whose file it can change."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    ).save_pretrained(folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{eqn.config.minilm_path()}/{name}", folder / name)
    return folder


# The one tiny run the tests share: GoEmotions' first rows, one epoch, no logger, no figures. A test adds only what
# it checks (Hydra keeps the last value of a key given twice): compose_config(*TINY, "trainer.max_epochs=2").
TINY = (
    "data.max_train_samples=64",
    "data.max_eval_samples=32",
    "trainer.max_epochs=1",
    "logger=none",
    "pipeline.analyze=false",
)
SMALL_TEXTCNN = (  # a smaller TextCNN for the tests of resume and regression logic
    "model.batch_size=32",
    "data.eval_batch_size=32",
    "model.backbone.embed_dim=32",
    "model.backbone.num_filters=16",
)


def eqn_run_command(tmp_path: Path, run_dir: Path, *overrides: str) -> list[str]:
    """`python -m eqn.run` with these overrides, writing under tmp_path (no progress bar): for tests that start a run
    in its own process (to signal, kill or refuse it)."""
    return [
        sys.executable,
        "-m",
        "eqn.run",
        *overrides,
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small TextCNN EQN run on GoEmotions, shared by the annotation and analysis tests."""
    from eqn.run import run

    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_config(
        *TINY, "data.max_train_samples=400", "data.max_eval_samples=200", "pipeline.analyze=true", tmp_path=tmp
    )
    run(cfg, run_dir=str(tmp / "run"))
    return tmp / "run"


# Tests that start eqn in other processes take 10-30 s each; run them first so that, with one pytest-xdist worker per
# core (`make test`), no worker is left alone with a long one at the end.
LONG_FIRST = (
    "test_app.py::",
    "test_sweeps.py::test_seeded_2x2x2",
    "test_search.py::test_smoke_search_resumes",
    "test_distributed.py::",
    "test_annotate.py::test_two_processes",
    "test_smoke_grid.py::test_minilm",
    "test_share.py::test_minilm",
    "test_fresh_clone.py::",
    "test_interruptions.py::test_refused",
    "test_interruptions.py::test_real_signal",
    "test_sweeps.py::test_submitit",
    "test_resume.py::test_sigkill",
    "test_search.py::",
    "test_races.py::test_kill",
    "test_races.py::test_a_refused_run",
    "test_build_annotator.py::",
    "test_builtin.py::",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, name in enumerate(LONG_FIRST) if name in item.nodeid), len(LONG_FIRST))

    items.sort(key=rank)  # stable: otherwise in file order
