"""Text -> token ids with the `tokenizers` library: a word-level vocabulary built from the training split
for the classic backbones, or a Hugging Face encoder's own fast tokenizer. Both serialise to one JSON
string, so a checkpoint carries its tokeniser and annotating needs nothing else."""

from __future__ import annotations

import itertools
import json
import os
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"


@contextmanager
def tokenizer_threads(enabled: bool) -> Iterator[None]:
    """Let `tokenizers` use every core inside the block (it reads TOKENIZERS_PARALLELISM on each call)."""
    if not enabled:
        yield
        return
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


class TextEncoder:
    """A `tokenizers.Tokenizer` plus the two facts the collate function needs: pad id and max length."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int, kind: str):
        self.tokenizer, self.pad_id, self.kind = tokenizer, pad_id, kind
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: list[str], max_length: int, parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(N x max_len) int32 ids padded with pad_id, and the N lengths (each >= 1). `parallel` tokenises on every
        core even where TOKENIZERS_PARALLELISM=false (set for training, whose data loader workers fork).
        `self.overflowed` marks the texts that were longer than max_length (and cut)."""
        ids, lengths, _ = self.encode_windows(texts, max_length, parallel, overlap=None)
        return ids, lengths

    def encode_windows(
        self, texts: list[str], max_length: int, parallel: bool = False, overlap: int | None = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like encode, but a text longer than max_length becomes several windows of max_length tokens, each
        overlapping the one before by `overlap` tokens (overlap=None: only the first window, the text cut).
        Returns (ids, lengths, owner): owner[i] is the text that window i belongs to."""
        self.tokenizer.enable_truncation(max_length, stride=overlap or 0)
        try:
            with tokenizer_threads(parallel):
                encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        finally:
            self.tokenizer.no_truncation()
        self.overflowed = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(encodings))
        if overlap is None:
            owner = np.arange(len(encodings))
            rows = [e.ids for e in encodings]
        else:
            windows = [[e, *e.overflowing] for e in encodings]
            owner = np.repeat(np.arange(len(windows)), [len(w) for w in windows])
            rows = [w.ids for ws in windows for w in ws]
        return (*self._pad(rows, len(rows)), owner)

    def _pad(self, rows: list[list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        ids = np.full((n, int(counts.max(initial=1))), self.pad_id, dtype=np.int32)
        ids[np.arange(ids.shape[1]) < counts[:, None]] = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.int32, count=int(counts.sum())
        )
        lengths = np.maximum(counts, 1)  # an empty text is one padding token
        return ids, lengths

    def to_str(self) -> str:
        return json.dumps({"kind": self.kind, "pad_id": self.pad_id, "tokenizer": self.tokenizer.to_str()})

    @classmethod
    def from_str(cls, payload: str) -> "TextEncoder":
        obj = json.loads(payload)
        return cls(Tokenizer.from_str(obj["tokenizer"]), obj["pad_id"], obj["kind"])


def build_word_encoder(
    texts: list[str], vocab_size: int = 30000, min_frequency: int = 1, lowercase: bool = True
) -> TextEncoder:
    """Word-level vocabulary from the training texts: NFKC (+ lower-case), split on spaces and punctuation."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    pad = tokenizer.token_to_id(PAD)
    assert pad is not None  # a special token of the trained vocabulary
    return TextEncoder(tokenizer, pad, "word")


def load_pretrained_encoder(name_or_path: str) -> TextEncoder:
    """The fast tokenizer of a Hugging Face encoder (hub id or local folder)."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    pad_id = hf.pad_token_id if hf.pad_token_id is not None else 0
    return TextEncoder(backend, pad_id, "pretrained")


def build_encoder(spec: dict, train_texts: list[str]) -> TextEncoder:
    if spec["kind"] == "word":
        return build_word_encoder(
            train_texts, spec.get("vocab_size", 30000), spec.get("min_frequency", 1), spec.get("lowercase", True)
        )
    if spec["kind"] == "pretrained":
        return load_pretrained_encoder(spec["name"])
    raise ValueError(f"unknown tokenizer kind {spec['kind']!r}; choose 'word' or 'pretrained'")
