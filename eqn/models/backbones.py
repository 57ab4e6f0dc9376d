"""Backbones: token ids (B x L) + mask -> one vector per text (B x output_dim).

ann, cnn, lstm and textcnn read a word-level vocabulary; bert wraps any Hugging Face encoder.
"""

from __future__ import annotations

import operator
from contextlib import contextmanager
from functools import reduce
from typing import Any, cast

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)


class Backbone(nn.Module):
    """What every backbone gives the head: one vector of `output_dim` per text."""

    output_dim: int


class WordBackbone(Backbone):
    """Shared embedding for the classic backbones (optionally initialised from pretrained vectors)."""

    def __init__(self, vocab_size: int, embed_dim: int, pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)


class ANN(WordBackbone):
    """Embedding bag (mean over tokens) -> MLP."""

    def __init__(
        self, vocab_size: int, pad_id: int = 0, embed_dim: int = 300, hidden_dim: int = 256, dropout: float = 0.3
    ):
        super().__init__(vocab_size, embed_dim, pad_id)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = hidden_dim

    def forward(self, input_ids, attention_mask):
        return self.mlp(masked_mean(self.embedding(input_ids), attention_mask))


class TextCNN(WordBackbone):
    """Kim (2014): parallel convolutions of several widths, ReLU, max-over-time pooling, dropout."""

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        embed_dim: int = 300,
        filter_sizes=(3, 4, 5),
        num_filters: int = 100,
        dropout: float = 0.5,
        valid_windows_only: bool = True,
    ):
        super().__init__(vocab_size, embed_dim, pad_id)
        self.valid_windows_only = valid_windows_only
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, k) for k in filter_sizes)
        self.dropout = nn.Dropout(dropout)
        self.widest = max(filter_sizes)
        self.output_dim = num_filters * len(filter_sizes)

    _folded: list[torch.Tensor] | None = None  # fold()'s lookup tables, while the module is in eval mode

    @torch.no_grad()
    def fold(self) -> None:
        """Inference only: precompute every word's response to every filter offset (vocabulary x width x filters),
        so a convolution becomes a lookup and a sum (the same maths up to float summation order, far fewer FLOPs).
        Dropped as soon as the module trains again."""
        weight = self.embedding.weight
        self._folded = [torch.einsum("ve,fek->vkf", weight, conv.weight).flatten(1) for conv in self.convs]

    def conv_responses(self, input_ids, x, i: int) -> torch.Tensor:
        conv = cast(nn.Conv1d, self.convs[i])
        folded = self._folded
        if self.training or folded is None:
            return conv(x())
        k = conv.kernel_size[0]
        looked_up = nn.functional.embedding(input_ids, folded[i]).view(*input_ids.shape, k, -1)  # B x L x k x F
        steps = input_ids.shape[1] - k + 1
        h = reduce(operator.add, (looked_up[:, j : j + steps, j] for j in range(k))) + cast(torch.Tensor, conv.bias)
        return h.transpose(1, 2)  # B x F x (L - k + 1)

    def train(self, mode: bool = True):
        if mode:
            self._folded = None
        return super().train(mode)

    def forward(self, input_ids, attention_mask):
        if input_ids.shape[1] < self.widest:  # a batch of short texts: pad so the widest filter fits (masked below)
            input_ids = nn.functional.pad(
                input_ids, (0, self.widest - input_ids.shape[1]), value=self.embedding.padding_idx or 0
            )
        embedded = []

        def x():  # B x E x L, computed once and only when a convolution needs it
            if not embedded:
                embedded.append(self.embedding(input_ids).transpose(1, 2))
            return embedded[0]

        lengths = attention_mask.sum(1, keepdim=True)
        pooled = []
        for i, conv in enumerate(self.convs):
            h = torch.relu(self.conv_responses(input_ids, x, i))  # B x F x (L - k + 1)
            # only windows inside the real tokens count (the first one when the text is shorter than k),
            # so the output does not depend on how much padding the batch has
            if not self.valid_windows_only:  # Kim's padded max-pool: windows over padding count too
                pooled.append(h.amax(-1))
                continue
            starts = torch.arange(h.shape[-1], device=h.device).unsqueeze(0)
            valid = starts <= (lengths - conv.kernel_size[0]).clamp_min(0)
            pooled.append(h.masked_fill(~valid.unsqueeze(1), 0.0).amax(-1))
        return self.dropout(torch.cat(pooled, dim=1))


class CNN(TextCNN):
    """One convolution layer + global max-pool."""

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        embed_dim: int = 300,
        kernel_size: int = 3,
        num_filters: int = 256,
        dropout: float = 0.3,
    ):
        super().__init__(vocab_size, pad_id, embed_dim, (kernel_size,), num_filters, dropout)


class LSTM(WordBackbone):
    """Bidirectional LSTM, max- and mean-pooled over the real tokens."""

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        embed_dim: int = 300,
        hidden_dim: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
    ):
        super().__init__(vocab_size, embed_dim, pad_id)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.output_dim = 4 * hidden_dim

    def forward(self, input_ids, attention_mask):
        lengths = attention_mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        return self.dropout(torch.cat([masked_max(out, attention_mask), masked_mean(out, attention_mask)], dim=1))


class Bert(Backbone):
    """Any Hugging Face encoder. `pooling`: 'pooler' (tanh dense over [CLS], as the authors), 'cls' or 'mean'.

    `hf_config` (filled in after the first build) lets a checkpoint rebuild the architecture offline.
    """

    def __init__(
        self,
        pretrained: str,
        pooling: str = "pooler",
        random_init: bool = False,
        config_overrides: dict | None = None,
        hf_config: dict | None = None,
        lora: dict | None = None,
        **_,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("pooler", "cls", "mean"):
            raise ValueError(f"model.backbone.pooling must be pooler, cls or mean, not {pooling!r}")
        self.pooling = pooling
        extra: dict[str, Any] = {"add_pooling_layer": pooling == "pooler"}
        if hf_config is not None:
            config = AutoConfig.for_model(**hf_config)
            self.encoder = AutoModel.from_config(config, **extra)
        else:
            config = AutoConfig.from_pretrained(pretrained, **(config_overrides or {}))
            with quiet_transformers():  # its load report lists the pooler weights mean/cls pooling leaves out
                self.encoder = (
                    AutoModel.from_config(config, **extra)
                    if random_init
                    else AutoModel.from_pretrained(pretrained, config=config, **extra)
                )
        self.hf_config = self.encoder.config.to_dict()
        self.output_dim = self.encoder.config.hidden_size
        if lora:  # a parameter-efficient delta (peft LoRA): the encoder frozen, low-rank updates trained
            self.encoder = with_lora(self.encoder, lora)
        self.encoder.train()  # from_pretrained returns eval mode; Lightning would keep dropout off

    def forward(self, input_ids, attention_mask):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        return masked_mean(out.last_hidden_state, attention_mask)


LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
# named sets of BERT modules for model.backbone.lora.target_modules (a list of module names works too)
LORA_TARGETS = {
    "qv": ["query", "value"],
    "attention": ["query", "key", "value", "attention.output.dense"],
    "all": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
}


@contextmanager
def quiet_transformers():
    """transformers' loading messages and progress bars off (errors still shown), restored afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def with_lora(encoder: nn.Module, lora: dict) -> nn.Module:
    """`encoder` wrapped by peft's LoRA: {r, alpha, dropout, target_modules} (BERT names: query, key, value,
    attention.output.dense, intermediate.dense, output.dense); only the LoRA matrices train."""
    from peft import LoraConfig, get_peft_model

    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ValueError(f"model.backbone.lora: unknown key(s) {unknown}; use {list(LORA_KEYS)}")
    r = int(lora.get("r", 8))
    if r < 1:
        raise ValueError(f"model.backbone.lora.r={r}: must be at least 1")
    targets = lora.get("target_modules") or "qv"
    if isinstance(targets, str):
        if targets not in LORA_TARGETS:
            raise ValueError(
                f"model.backbone.lora.target_modules={targets!r}: name one of {list(LORA_TARGETS)} or "
                "give a list of module names"
            )
        targets = LORA_TARGETS[targets]
    alpha = lora.get("alpha")
    # a pooler (pooled output -> head, the transformers-native layout) trains in full beside the delta: frozen, it
    # would keep the base's untuned projection (384 x 384 for MiniLM: 0.6 MB more to ship)
    pooler = ["pooler"] if getattr(encoder, "pooler", None) is not None else None
    config = LoraConfig(
        r=r,
        lora_alpha=float(2 * r if alpha is None else alpha),  # type: ignore[arg-type]  # a float scales as peft's int
        lora_dropout=float(lora.get("dropout") or 0.0),
        target_modules=list(targets),
        bias="none",
        modules_to_save=pooler,
    )
    import warnings

    with warnings.catch_warnings():  # peft asks a transformers 5 model a deprecated question; nothing for a user to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(encoder, config)


@torch.no_grad()
def init_word_embeddings(embedding: nn.Embedding, words: dict[str, int], pretrained: str) -> int:
    """Initialise a word vocabulary's embeddings from a Hugging Face encoder's input embeddings: each word
    gets the mean vector of its sub-word pieces. Returns how many words were initialised."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    table = AutoModel.from_pretrained(pretrained).get_input_embeddings().weight
    if table.shape[1] != embedding.embedding_dim:
        raise ValueError(
            f"model.embedding_init={pretrained!r} has {table.shape[1]}-dim embeddings; "
            f"set model.backbone.embed_dim={table.shape[1]}"
        )
    done = 0
    for word, index in words.items():
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if pieces and index != embedding.padding_idx:
            embedding.weight[index] = table[pieces].mean(0)
            done += 1
    return done


BACKBONES = {f"{__name__}.{cls.__name__}": cls for cls in (ANN, CNN, TextCNN, LSTM, Bert)}


def build_backbone(spec: dict) -> Backbone:
    """A backbone from its config node; only eqn's own classes (a checkpoint never names code to run)."""
    options = dict(spec)
    target = options.pop("_target_", None)
    if target not in BACKBONES:
        raise ValueError(f"backbone {target!r} is not one of eqn's backbones ({', '.join(sorted(BACKBONES))})")
    return BACKBONES[target](**options)
