import torch

from eqn.config import minilm_path
from eqn.data.tokenize import load_pretrained_encoder
from eqn.models.backbones import Bert


def test_minilm_loads_offline_and_trains_with_dropout():
    path = minilm_path()
    backbone = Bert(path, pooling="mean")
    assert backbone.encoder.training, "from_pretrained returns eval mode; the backbone must switch to train()"
    assert backbone.output_dim == 384
    encoder = load_pretrained_encoder(path)
    ids, lengths = encoder.encode(["i am so happy today", "what a sad story"], 32)
    assert ids[0, 0] == 101  # [CLS]
    input_ids = torch.from_numpy(ids).long()
    mask = (torch.arange(ids.shape[1]) < torch.from_numpy(lengths).unsqueeze(1)).long()
    a, b = backbone(input_ids, mask), backbone(input_ids, mask)
    assert not torch.allclose(a, b), "dropout must be active in training mode"
    backbone.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(input_ids, mask), backbone(input_ids, mask))
