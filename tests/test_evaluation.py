import pytest
import torch

from eqn.evaluation import classification_metrics, decide, intensity_metrics, tune_thresholds


def test_multilabel_decision_keeps_top_label_even_below_threshold():
    scores = torch.tensor([[1.0, 2.0, 0.5], [9.0, 8.0, 1.0]])
    pred = decide(scores, True, torch.tensor([5.0, 5.0, 5.0]))
    assert pred.tolist() == [[False, True, False], [True, True, False]]


def test_single_label_decision_is_argmax():
    assert decide(torch.tensor([[0.1, 0.7, 0.2]]), False).tolist() == [[False, True, False]]


def test_tuned_threshold_separates_a_separable_label():
    scores = torch.tensor([[9.0], [7.0], [3.0], [1.0]])
    gold = torch.tensor([[True], [True], [False], [False]])
    t = tune_thresholds(scores, gold)
    assert 3.0 < t.item() <= 7.0


def test_metrics_on_a_known_case():
    gold = torch.tensor([[1, 0], [0, 1], [1, 1]]).bool()
    pred = torch.tensor([[1, 0], [1, 1], [1, 0]]).bool()
    m = classification_metrics(pred, gold, True, ["a", "b"])
    # label a: tp=2 fp=1 fn=0 -> 0.8; label b: tp=1 fp=0 fn=1 -> 0.667
    assert m["f1/a"] == pytest.approx(0.8)
    assert m["f1/b"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["accuracy"] == pytest.approx(1 / 3)
    im = intensity_metrics(gold.float() * 10, gold, 10.0)
    assert im["mse"] == 0.0
