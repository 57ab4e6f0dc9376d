"""No file eqn loads can run code: checkpoints, token caches and score files crafted to execute a payload are
refused with one line naming the file (the payload would create a marker file if it ever ran)."""

import pickle

import pytest
import torch

from eqn.annotate import annotate_file
from eqn.data.datamodule import EQNDataModule
from eqn.figures import analyze_run
from eqn.io import DataError, load_tensors
from eqn.models.module import load_module


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # runs on unpickling: creates the marker file


def malicious_checkpoint(path, marker):
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": Payload(marker)}}, path)


def test_malicious_checkpoint_is_refused_by_every_loader(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.ckpt"
    malicious_checkpoint(ckpt, marker)
    with pytest.raises(DataError, match=r"model.ckpt: not a trusted eqn checkpoint"):
        load_module(ckpt)
    inp = tmp_path / "in.csv"
    inp.write_text("text\nhello\n")
    with pytest.raises(DataError, match="not a trusted eqn checkpoint"):
        annotate_file(str(ckpt), str(inp), str(tmp_path / "out.csv"), progress=False)
    assert not marker.exists() and not (tmp_path / "out.csv").exists()


def test_checkpoint_naming_foreign_code_is_refused(tmp_path, trained_run):
    good = torch.load(trained_run / "checkpoints" / "eqn.ckpt", weights_only=True)
    good["hyper_parameters"]["backbone"]["_target_"] = "os.system"
    torch.save(good, tmp_path / "foreign.ckpt")
    with pytest.raises(DataError, match=r"foreign.ckpt: not a trusted eqn checkpoint: .*not one of eqn's backbones"):
        load_module(tmp_path / "foreign.ckpt")
    good["hyper_parameters"]["backbone"]["_target_"] = "eqn.models.backbones.TextCNN"
    good["hyper_parameters"]["optimizer"] = {"_target_": "os.system", "command": "true"}
    module = load_module(trained_run / "checkpoints" / "eqn.ckpt")
    module.hparams.optimizer = good["hyper_parameters"]["optimizer"]
    with pytest.raises(ValueError, match="use a torch.optim optimizer"):
        module.configure_optimizers()


def test_truncated_and_non_checkpoint_files_get_one_line(tmp_path, trained_run):
    data = (trained_run / "checkpoints" / "eqn.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.ckpt").write_text("hello")
    for name in ("cut.ckpt", "text.ckpt"):
        with pytest.raises(DataError, match=f"{name}: not a PyTorch checkpoint \\(truncated or corrupt file\\)") as err:
            load_module(tmp_path / name)
        assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


def test_malicious_token_cache_is_rebuilt_not_loaded(tmp_path, data_dir):
    marker = tmp_path / "pwned"
    options = dict(
        name="goemotions",
        data_dir=str(data_dir),
        tokenizer={"kind": "word"},
        max_train_samples=50,
        max_eval_samples=20,
        cache_dir=str(tmp_path / "cache"),
    )
    first = EQNDataModule(**options).prepare()
    cached = next((tmp_path / "cache").iterdir())
    with cached.open("wb") as f:
        pickle.dump(Payload(marker), f)
    second = EQNDataModule(**options).prepare()
    assert not marker.exists()
    assert torch.equal(first.token_ids["train"], second.token_ids["train"])
    assert load_tensors(cached)[0]  # rebuilt as a proper tensor file


def test_malicious_score_file_is_refused(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    (run_dir / "stages" / "eqn").mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    with (run_dir / "stages" / "eqn" / "test_scores.safetensors").open("wb") as f:
        pickle.dump(Payload(marker), f)
    with pytest.raises(DataError, match="test_scores.safetensors: not a readable eqn tensor file"):
        analyze_run(run_dir)
    assert not marker.exists()
