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


def test_word_embeddings_from_a_pretrained_encoder():
    from eqn.config import minilm_path
    from eqn.data.tokenize import build_word_encoder

    encoder = build_word_encoder(["happy happy joy", "sad day"], min_frequency=1)
    model = backbones.TextCNN(vocab_size=encoder.vocab_size, embed_dim=384)
    vocab = encoder.tokenizer.get_vocab()
    assert backbones.init_word_embeddings(model.embedding, vocab, minilm_path()) == len(vocab) - 1  # all but [PAD]
    happy, joy = model.embedding.weight[vocab["happy"]], model.embedding.weight[vocab["joy"]]
    assert torch.nn.functional.cosine_similarity(happy, joy, dim=0) > 0.2  # pretrained geometry, not random
    assert model.embedding.weight[0].abs().sum() == 0
    with pytest.raises(ValueError, match="embed_dim=384"):
        backbones.init_word_embeddings(backbones.ANN(vocab_size=encoder.vocab_size).embedding, vocab, minilm_path())


def test_folded_textcnn_gives_the_convolution_results_and_is_dropped_when_training():
    from eqn.models.backbones import CNN, TextCNN

    torch.manual_seed(0)
    for net in (TextCNN(vocab_size=50, pad_id=0, embed_dim=16, num_filters=8), CNN(vocab_size=50, embed_dim=16)):
        net.eval()
        ids = torch.randint(1, 50, (6, 9))
        mask = torch.ones_like(ids)
        mask[3:, 5:] = 0
        ids[3:, 5:] = 0
        short = ids[:, :2]
        plain = [net(ids, mask), net(short, mask[:, :2])]
        net.fold()
        folded = [net(ids, mask), net(short, mask[:, :2])]
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, folded))
        net.train()
        assert net._folded is None
