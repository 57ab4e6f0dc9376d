"""Backbone outputs must not depend on how much padding a batch carries."""
import pytest
import torch

from eqn.models import backbones


@pytest.mark.parametrize("cls", [backbones.ANN, backbones.CNN, backbones.TextCNN, backbones.LSTM])
def test_padding_does_not_change_the_output(cls):
    torch.manual_seed(0)
    model = cls(vocab_size=50, pad_id=0).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    wide = torch.nn.functional.pad(ids, (0, 6))
    wide_mask = torch.nn.functional.pad(mask, (0, 6))
    with torch.no_grad():
        a, b = model(ids, mask), model(wide, wide_mask)
        alone = model(ids[1:, :5], mask[1:, :5])
    assert a.shape == (2, model.output_dim)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[1:], alone, atol=1e-5)
