"""precision=fast gives fp32's decisions on every row: the engine is chosen by measurement, and every row whose
decisions the engine's error margin could flip is rescored in fp32."""

import pandas as pd
import pytest
import torch

from eqn.annotate import Annotator
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def bert_module():
    from eqn.data.datamodule import EQNDataModule
    from eqn.models.module import build_module

    cfg = compose_config("model=tiny_bert", "data.max_train_samples=64", "paths.cache_dir=null")
    dm = EQNDataModule(
        "goemotions",
        cfg.data.data_dir,
        tokenizer=dict(cfg.model.tokenizer),
        max_length=32,
        max_train_samples=64,
        max_eval_samples=200,
        cache_dir=None,
    ).prepare()
    torch.manual_seed(0)
    module = build_module(dm.spec, cfg, "eqn", "test").eval()
    texts = dm.split("test").texts[:200]
    scores = Annotator(module).scores(texts)
    module.thresholds.copy_(scores.quantile(0.8, dim=0))  # decisions that depend on small score differences
    return module, texts


def test_fast_mode_keeps_fp32_decisions_for_whichever_engine_is_used(bert_module, tmp_path, monkeypatch):
    monkeypatch.setenv("EQN_CACHE_DIR", str(tmp_path))
    module, texts = bert_module
    base = Annotator(module).annotate(texts)
    fast = Annotator(module, precision="fast")
    out = fast.annotate(texts)  # first use: calibrates, stores its choice
    assert out["emotions"].tolist() == base["emotions"].tolist()
    assert set(fast.fast.report["candidates"]) >= {"torch-int8", "bf16", "onnxruntime-fp32"}
    assert any((tmp_path / "fast").rglob("choice.json"))
    for engine in (
        "torch-int8",
        "bf16",
        "onnxruntime-fp32",
    ):  # forced engines with a margin measured now: rows near a decision rescored
        forced = Annotator(module, precision="fast")
        engine_scores = forced.fast._scores(forced.fast.build(engine), *encoded(forced, texts), 64)
        error = float((engine_scores - forced.scores_local(*encoded(forced, texts), 64)).abs().max())
        forced.fast._use(engine, 2 * error + 1e-6)
        result = forced.annotate(texts)
        assert result["emotions"].tolist() == base["emotions"].tolist()
        assert 0 < forced.fast.rescored <= forced.fast.rows
        kept = forced.fast.uncertain(engine_scores, forced.thresholds, True).logical_not()
        values = result[forced.label_columns].to_numpy()
        assert (
            abs(values - base[forced.label_columns].to_numpy()).max(axis=1)[kept.numpy()] <= 2 * error + 0.011
        ).all()


def encoded(annotator, texts):
    ids, lengths = annotator.encoder.encode(texts, annotator.max_length)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def test_word_backbones_are_fast_in_fp32_already(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("EQN_CACHE_DIR", str(tmp_path))
    fast = Annotator.from_checkpoint(trained_run / "checkpoints" / "eqn.ckpt", precision="fast")
    base = Annotator.from_checkpoint(trained_run / "checkpoints" / "eqn.ckpt")
    texts = ["so happy for you", "this is awful", "what?"]
    assert fast.fast.name == "fp32" and fast.fast.calibrated
    pd.testing.assert_frame_equal(fast.annotate(texts), base.annotate(texts))


def decisions(scores, thresholds):
    """The printed `emotions` of each row: labels at or above their thresholds (the top one always), highest first."""
    keep = (scores >= thresholds) | torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).bool()
    return [
        tuple(sorted((j for j in range(len(row)) if k[j]), key=lambda j: -row[j]))
        for row, k in zip(scores.tolist(), keep.tolist())
    ]


def test_per_label_margins_flag_every_row_a_bounded_error_could_change():
    from eqn.fast import FastScorer

    scorer = FastScorer.__new__(FastScorer)
    scorer.margin = torch.tensor([0.1, 0.1, 1.0])
    thresholds = torch.tensor([5.0, 5.0, 5.0])
    scores = torch.tensor(
        [
            [9.0, 8.0, 1.0],  # certain
            [9.0, 8.85, 1.0],  # the runner-up within both margins of the top
            [9.0, 1.0, 8.1],  # label 2 (margin 1.0) could overtake the top
            [9.0, 5.05, 1.0],  # label 1 within its margin of its threshold
            [9.0, 1.0, 5.9],  # label 2 within its margin of its threshold
            [9.0, 7.5, 6.4],
        ]
    )  # chosen labels 1 and 2 could swap places
    assert scorer.uncertain(scores, thresholds, True).tolist() == [False, True, True, True, True, True]
    assert scorer.uncertain(scores, thresholds, False).tolist() == [False, True, True, False, False, False]
    # random rows, margins and errors: a row not flagged keeps its decisions under every error within the margins
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(3000, 6, generator=gen) * 4
    scorer.margin = torch.rand(6, generator=gen) * 0.3
    thresholds = torch.rand(6, generator=gen) * 4
    kept = ~scorer.uncertain(scores, thresholds, True)
    assert 0 < int(kept.sum()) < len(scores)
    base = decisions(scores[kept], thresholds)
    for _ in range(30):
        noise = (torch.rand(int(kept.sum()), 6, generator=gen) * 2 - 1) * scorer.margin
        assert decisions(scores[kept] + noise, thresholds) == base


@pytest.mark.parametrize(
    "bad",
    [
        {"engine": "bf16", "margin": [0.1, 0.2]},
        {"engine": "bf16", "margin": "x"},
        {"engine": "gpu-magic", "margin": 0.1},
        [1, 2],
        {"engine": "bf16", "margin": -1},
    ],
)
def test_a_malformed_cached_choice_is_ignored_and_rebuilt(bert_module, tmp_path, monkeypatch, bad):
    import json

    from eqn.fast import FastScorer, model_digest

    monkeypatch.setenv("EQN_CACHE_DIR", str(tmp_path))
    module, texts = bert_module
    choice = tmp_path / "fast" / model_digest(module) / "choice.json"
    choice.parent.mkdir(parents=True)
    choice.write_text(json.dumps(bad))
    scorer = FastScorer(module)
    assert not scorer.calibrated and scorer.name == "fp32"  # not trusted: calibrates on first use
    out = Annotator(module, precision="fast").annotate(texts[:40])
    assert out["emotions"].tolist() == Annotator(module).annotate(texts[:40])["emotions"].tolist()
    stored = json.loads(choice.read_text())  # rewritten: one margin, or one per label
    assert stored != bad and FastScorer(module)._stored() == stored
