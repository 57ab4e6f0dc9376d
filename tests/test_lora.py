"""model.backbone.lora: a LoRA delta (peft) on a frozen transformer encoder — only the delta and the head train,
the run's checkpoint reloads to the same scores, and named target sets resolve to BERT's modules."""

import pytest
import torch

from eqn.models.backbones import LORA_TARGETS, Bert
from eqn.run import run
from tests.conftest import TINY, compose_config


def test_a_lora_run_trains_only_the_delta_and_reloads(tmp_path):
    cfg = compose_config(
        "model=tiny_bert",
        "pipeline=baseline",
        *TINY,
        "+model.backbone.lora={r: 4, target_modules: attention}",
        "model.optimizer.lr=1e-3",
        tmp_path=tmp_path,
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    from eqn.annotate import Annotator
    from eqn.models.module import load_module

    module = load_module(tmp_path / "run" / "checkpoints" / "baseline.ckpt")
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    lora = {n: p for n, p in module.state_dict().items() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: it trained
    texts = ["what a lovely day", "this is awful"]
    a, b = (
        Annotator(module).scores(texts),
        Annotator(load_module(tmp_path / "run" / "checkpoints" / "baseline.ckpt")).scores(texts),
    )
    assert torch.equal(a, b)


def test_lora_settings_are_checked():
    cfg = compose_config("model=tiny_bert")
    spec = {k: v for k, v in dict(cfg.model.backbone).items() if k != "_target_"}
    for bad, words in (
        ({"r": 0}, "must be at least 1"),
        ({"rank": 4}, "unknown key"),
        ({"target_modules": "everything"}, "name one of"),
    ):
        with pytest.raises(ValueError, match=words):
            Bert(**spec, lora=bad)
    assert set(LORA_TARGETS) == {"qv", "attention", "all"}
