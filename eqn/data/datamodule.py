"""The LightningDataModule: load a dataset, tokenise it once (cached on disk), hold the mutable
(N x C) training targets, and serve length-bucketed, dynamically padded batches."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from eqn.data import sources
from eqn.data.sources import LabelledData
from eqn.data.tokenize import TextEncoder, build_encoder
from eqn.io import ConfigError, atomic_path
from eqn.targets import gold_mask, init_targets

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CACHE_VERSION = 1


class BucketSampler(Sampler[int]):
    """Shuffled indices, sorted by length inside windows of `window` batches, batches shuffled again:
    batches of similar length (little padding) in a fresh random order every epoch."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, window: int = 50):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        span = self.batch_size * self.window
        chunks = [order[i:i + span] for i in range(0, len(order), span)]
        batches = []
        for chunk in chunks:
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        for b in rng.permutation(len(batches)):
            yield from batches[b].tolist()


class OrderedSampler(Sampler[int]):
    """A fixed order (longest first for evaluation); a Sampler so Lightning can shard it under DDP."""

    def __init__(self, order: list[int]):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)


def pad_batch(ids: torch.Tensor, lengths: torch.Tensor, idx: torch.Tensor, pad_id: int,
              min_length: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `idx` of a padded id matrix, cut to the batch's longest text (at least `min_length`): ids and mask."""
    width = max(int(lengths[idx].max()), min_length)
    input_ids = ids[idx, :width]
    if input_ids.shape[1] < width:
        input_ids = torch.nn.functional.pad(input_ids, (0, width - input_ids.shape[1]), value=pad_id)
    attention_mask = torch.arange(width).unsqueeze(0) < lengths[idx].unsqueeze(1)
    return input_ids.long(), attention_mask.long()


class Collator:
    """Indices -> padded batch. Targets are read from the live tensor, so label regression shows up at once."""

    def __init__(self, dm: "EQNDataModule", split: str):
        self.dm, self.split = dm, split

    def __call__(self, index: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        input_ids, attention_mask = pad_batch(self.dm.token_ids[self.split], self.dm.lengths[self.split], idx,
                                              self.dm.encoder.pad_id, self.dm.min_length)
        batch = {"index": idx, "input_ids": input_ids, "attention_mask": attention_mask,
                 "gold": self.dm.gold[self.split][idx]}
        if self.split == "train":
            batch["targets"] = self.dm.targets[idx]
        return batch


class EQNDataModule(LightningDataModule):
    def __init__(self, name: str, data_dir: str, tokenizer: dict, batch_size: int = 32, eval_batch_size: int = 256,
                 max_length: int = 128, max_train_samples: int | None = None, max_eval_samples: int | None = None,
                 num_workers: int = 0, seed: int = 42, scale: float = 10.0, cache_dir: str | None = None,
                 on_bad_rows: str = "error", encoder: str | None = None, min_length: int = 1, **reader_options):
        super().__init__()
        self.name, self.data_dir, self.tokenizer_spec = name, data_dir, dict(tokenizer)
        self.batch_size, self.eval_batch_size, self.max_length = batch_size, eval_batch_size, max_length
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.num_workers, self.seed, self.scale, self.cache_dir = num_workers, seed, scale, cache_dir
        self.on_bad_rows, self.reader_options, self.min_length = on_bad_rows, reader_options, min_length
        self.encoder: TextEncoder | None = TextEncoder.from_str(encoder) if encoder else None
        self.data: LabelledData | None = None

    # ------------------------------------------------------------------ loading
    def prepare(self) -> "EQNDataModule":
        """Read, subsample, tokenise (once; cached on disk) and build gold masks and initial targets."""
        if self.data is not None:
            return self
        data = sources.load(self.name, self.data_dir, on_bad_rows=self.on_bad_rows, seed=self.seed, **self.reader_options)
        for split, limit in (("train", self.max_train_samples), ("val", self.max_eval_samples), ("test", self.max_eval_samples)):
            n = len(data.splits[split])
            if limit is not None and limit > n:
                raise ConfigError(f"data.max_{'train' if split == 'train' else 'eval'}_samples={limit} is larger than "
                                 f"the {split} split of {data.name} ({n} rows)")
            if limit is not None and limit < n:
                keep = np.sort(np.random.default_rng(self.seed).choice(n, limit, replace=False))
                data.splits[split] = data.splits[split].subset(keep)
        self.data = data
        cached = self._cache_path(data)
        if cached is not None and cached.exists():
            payload = torch.load(cached, weights_only=False)
            self.encoder = TextEncoder.from_str(payload["encoder"])
            self.token_ids, self.lengths = payload["token_ids"], payload["lengths"]
            log.info("token ids loaded from cache %s", cached)
        else:
            if self.encoder is None:
                self.encoder = build_encoder(self.tokenizer_spec, data.splits["train"].texts)
            self.token_ids, self.lengths = {}, {}
            for split in SPLITS:
                ids, lengths = self.encoder.encode(data.splits[split].texts, self.max_length)
                self.token_ids[split], self.lengths[split] = torch.from_numpy(ids), torch.from_numpy(lengths)
            if cached is not None:
                with atomic_path(cached) as tmp:
                    torch.save({"encoder": self.encoder.to_str(), "token_ids": self.token_ids, "lengths": self.lengths}, tmp)
        c = len(data.label_names)
        self.gold = {s: gold_mask(data.splits[s].labels, c) for s in SPLITS}
        self.targets = init_targets(self.gold["train"], self.scale)
        return self

    def _cache_path(self, data: LabelledData) -> Path | None:
        if not self.cache_dir or not data.files:
            return None
        h = hashlib.sha256()
        for f in data.files:
            h.update(hashlib.sha256(Path(f).read_bytes()).digest())
        key = {"v": CACHE_VERSION, "name": self.name, "opts": self.reader_options, "tok": self.tokenizer_spec,
               "encoder": self.encoder.to_str() if self.encoder else None, "max_length": self.max_length,
               "limits": [self.max_train_samples, self.max_eval_samples], "seed": self.seed,
               "bad": self.on_bad_rows}
        h.update(json.dumps(key, sort_keys=True, default=str).encode())
        return Path(self.cache_dir) / f"{self.name.replace(':', '_')}-{h.hexdigest()[:16]}.pt"

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # ------------------------------------------------------------------ facts
    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def multi_label(self) -> bool:
        return self.data.multi_label

    def split(self, name: str) -> sources.Split:
        return self.data.splits[name]

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        lengths = self.lengths[split].numpy()
        if shuffle:
            sampler = BucketSampler(lengths, self.batch_size, self.seed)
            batch_size = self.batch_size
        else:  # longest first: the largest batch shows its memory at once
            sampler = OrderedSampler(np.argsort(-lengths, kind="stable").tolist())
            batch_size = self.eval_batch_size
        return DataLoader(range(len(lengths)), batch_size=batch_size, sampler=sampler, collate_fn=Collator(self, split),
                          num_workers=self.num_workers, persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_loader(self, split: str) -> DataLoader:
        return self._loader(split, shuffle=False)
