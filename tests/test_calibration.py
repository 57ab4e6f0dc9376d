"""Per-label ECE and temperature scaling: an overconfident classifier's ECE falls, and folding the temperature into
the head changes no decision."""

import torch

from eqn.calibration import ece, fit_temperature, fold_temperature


def test_ece_of_a_calibrated_and_an_overconfident_predictor():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(20000, 3, generator=gen)
    gold = torch.rand(20000, 3, generator=gen) < p  # calibrated by construction
    assert (ece(p, gold) < 0.02).all()
    over = torch.sigmoid(torch.logit(p) * 3)  # the same ranking, overconfident
    assert (ece(over, gold) > 0.1).all()
    t = fit_temperature(torch.logit(p) * 3, gold)
    assert torch.allclose(t, torch.full((3,), 3.0), rtol=0.1)  # recovers the factor
    shared = fit_temperature(torch.logit(p) * 3, gold, per_label=False)
    assert shared.shape == (3,) and len(set(shared.tolist())) == 1
    assert (ece(torch.sigmoid(torch.logit(p) * 3 / t), gold) < 0.02).all()


def test_folding_keeps_every_decision(trained_run, tmp_path):
    import pytest

    from eqn.annotate import Annotator
    from eqn.models.module import load_module
    from eqn.run import run
    from tests.conftest import TINY, compose_config

    mse = load_module(trained_run / "checkpoints" / "coeqn.ckpt")
    with pytest.raises(ValueError, match="sigmoid classifiers"):
        fold_temperature(mse, torch.ones(len(mse.hparams.label_names)))
    tmp = tmp_path
    run(
        compose_config(
            "pipeline=baseline",
            *TINY,
            "data.max_train_samples=200",
            "data.max_eval_samples=64",
            "model.backbone.embed_dim=32",
            "model.backbone.num_filters=16",
            tmp_path=tmp,
        ),
        run_dir=str(tmp / "run"),
    )
    module = load_module(tmp / "run" / "checkpoints" / "baseline.ckpt")
    texts = ["thank you!", "this is awful", "what?", "i love it", "ok then", "so sad today"]
    before = Annotator(module).annotate(texts)
    names = list(module.hparams.label_names)
    shared = module.thresholds.clone()
    fold_temperature(module, torch.full((len(names),), 2.0))  # one temperature: every decision exactly
    after = Annotator(module).annotate(texts)
    assert after["emotions"].tolist() == before["emotions"].tolist()
    assert not after[names].equals(before[names])  # the intensities did change
    module = load_module(tmp / "run" / "checkpoints" / "baseline.ckpt")
    scores = Annotator(module).scores(texts)
    fold_temperature(module, torch.linspace(0.5, 3.0, len(names)))  # one per label: the same labels pass
    assert torch.equal(Annotator(module).scores(texts) >= module.thresholds, scores >= shared)
