import pytest
import torch

from eqn.targets import gold_mask, init_targets, regress_targets


def test_gold_mask_marks_every_gold_label():
    mask = gold_mask([[0], [1, 2], [2]], 3)
    assert mask.tolist() == [[True, False, False], [False, True, True], [False, False, True]]


def test_init_puts_scale_on_gold_and_zero_elsewhere():
    gold = gold_mask([[0], [1, 2]], 4)
    targets = init_targets(gold, 10.0)
    assert targets.tolist() == [[10, 0, 0, 0], [0, 10, 10, 0]]
    assert init_targets(gold, 5.0).max().item() == 5.0


def test_regress_keeps_gold_exactly_and_clips_the_rest():
    gold = gold_mask([[0], [1, 2]], 4)
    predictions = torch.tensor([[3.7, -2.0, 4.5, 12.0], [0.3, 8.1, 2.2, 9.99]])
    new = regress_targets(gold, predictions, 10.0)
    assert torch.equal(new[gold], torch.full((3,), 10.0))  # gold exactly the scale, whatever was predicted
    assert new[~gold].tolist() == pytest.approx([0.0, 4.5, 10.0, 0.3, 9.99])


def test_regress_changes_only_non_gold_cells():
    torch.manual_seed(0)
    gold = torch.rand(50, 6) < 0.2
    before = init_targets(gold)
    after = regress_targets(gold, torch.rand(50, 6) * 12 - 1)
    assert torch.equal(after[gold], before[gold])
    assert (after[~gold] != before[~gold]).any()
    assert after.min() >= 0 and after.max() <= 10


def test_floor_zeroes_small_scores_but_never_gold():
    gold = gold_mask([[1]], 3)
    new = regress_targets(gold, torch.tensor([[0.4, 0.1, 2.0]]), 10.0, floor=0.5)
    assert new.tolist() == [[0.0, 10.0, 2.0]]


def test_two_rounds_are_composable_and_keep_gold():
    gold = gold_mask([[0], [2]], 3)
    r1 = regress_targets(gold, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    r2 = regress_targets(gold, r1 * 0.5)
    assert r2[gold].tolist() == [10.0, 10.0]
    assert r2[~gold].tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5])


def test_regress_rejects_bad_predictions():
    gold = gold_mask([[0]], 2)
    with pytest.raises(ValueError, match="do not match"):
        regress_targets(gold, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        regress_targets(gold, torch.tensor([[float("nan"), 1.0]]))
