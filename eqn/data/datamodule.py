"""The LightningDataModule: load a dataset, tokenise it once (cached on disk), hold the mutable
(N x C) training targets, and serve length-bucketed, dynamically padded batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, cast

import numpy as np
import safetensors
import safetensors.torch
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from eqn.data import sources
from eqn.data.sources import LabelledData
from eqn.data.tokenize import TextEncoder, build_encoder
from eqn.errors import ConfigError
from eqn.io import atomic_path, digest
from eqn.targets import gold_mask, init_targets

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CACHE_VERSION = 2


def check_splits(data: LabelledData) -> None:
    """Every split has rows and the training split has more than one label, before any work."""
    for split in SPLITS:
        if len(data.splits[split]) == 0:
            raise ConfigError(
                f"{data.name}: the {split} split is empty; give it rows (or a larger data.val_fraction"
                f"/data.test_fraction)"
            )
    seen = {label for labels in data.splits["train"].labels for label in labels}
    if len(seen) < 2:
        names = [data.label_names[i] for i in sorted(seen)]
        raise ConfigError(f"{data.name}: the training split has a single label {names}; there is nothing to learn")


def write_cache(path: Path, encoder: TextEncoder, token_ids: dict, lengths: dict) -> None:
    """Token ids as safetensors (tensors only: loading it cannot run code), the tokenizer as JSON metadata."""
    tensors = {
        f"{kind}/{split}": t.contiguous()
        for kind, d in (("ids", token_ids), ("lengths", lengths))
        for split, t in d.items()
    }
    with atomic_path(path, own=False) as tmp:  # a private cache: a bad one is rebuilt over
        safetensors.torch.save_file(tensors, str(tmp), metadata={"encoder": encoder.to_str(), "v": str(CACHE_VERSION)})


def read_cache(path: Path) -> tuple[TextEncoder, dict, dict] | None:
    """The cached (encoder, token ids, lengths), or None (logged) when the file is not a readable eqn cache."""
    try:
        with safetensors.safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        encoder = TextEncoder.from_str(meta["encoder"])
        ids = {s: tensors[f"ids/{s}"] for s in SPLITS}
        lengths = {s: tensors[f"lengths/{s}"] for s in SPLITS}
    except Exception as err:  # stale, truncated or foreign: rebuilt, never trusted
        log.warning("%s: not a usable eqn token cache (%s); rebuilding it", path, str(err).splitlines()[0][:200])
        return None
    return encoder, ids, lengths


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
        chunks = [order[i : i + span] for i in range(0, len(order), span)]
        batches: list[np.ndarray] = []
        for chunk in chunks:
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
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


def pad_batch(ids: torch.Tensor, lengths: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `idx` of a padded id matrix, cut to the batch's longest text: ids and mask."""
    width = int(lengths[idx].max())
    input_ids = ids[idx, :width]
    attention_mask = torch.arange(width).unsqueeze(0) < lengths[idx].unsqueeze(1)
    return input_ids.long(), attention_mask.long()


def length_sorted_scores(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ids: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int,
    width: int,
) -> torch.Tensor:
    """`score(input_ids, attention_mask)` over every row in batches of `batch_size` texts, longest first (little
    padding), put back in row order: an N x `width` tensor."""
    order = torch.argsort(lengths, descending=True)
    out = torch.empty(len(lengths), width)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = score(*pad_batch(ids, lengths, idx))
    return out


class Collator:
    """Indices -> padded batch. Targets are read from the live tensor, so label regression shows up at once."""

    def __init__(
        self, token_ids: torch.Tensor, lengths: torch.Tensor, gold: torch.Tensor, targets: torch.Tensor | None
    ):
        self.token_ids, self.lengths, self.gold, self.targets = token_ids, lengths, gold, targets

    def __call__(self, index: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        input_ids, attention_mask = pad_batch(self.token_ids, self.lengths, idx)
        batch = {"index": idx, "input_ids": input_ids, "attention_mask": attention_mask, "gold": self.gold[idx]}
        if self.targets is not None:
            batch["targets"] = self.targets[idx]
        return batch


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data, fixed once the data module is prepared."""

    label_names: tuple[str, ...]
    multi_label: bool
    vocab_size: int
    pad_id: int
    encoder: str  # the serialised TextEncoder (tokenizer + pad id)
    encoder_kind: str
    max_length: int
    label_prior: tuple[float, ...]  # share of training rows carrying each label


class EQNDataModule(LightningDataModule):
    name: str  # the dataset (LightningDataModule declares it optional)

    def __init__(
        self,
        name: str,
        data_dir: str,
        tokenizer: dict,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        max_length: int = 128,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        split_seed: int = 42,
        val_from_train: bool = False,
        scale: float = 10.0,
        cache_dir: str | None = None,
        on_bad_rows: str = "error",
        encoder: str | None = None,
        bucket_batches: int = 50,
        **reader_options,
    ):
        super().__init__()
        self.name, self.data_dir, self.tokenizer_spec = name, data_dir, dict(tokenizer)
        self.batch_size, self.eval_batch_size, self.max_length = batch_size, eval_batch_size, max_length
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.num_workers, self.seed, self.split_seed, self.scale = num_workers, seed, split_seed, scale
        self.val_from_train, self.cache_dir, self.bucket_batches = val_from_train, cache_dir, bucket_batches
        self.on_bad_rows, self.reader_options = on_bad_rows, reader_options
        self._encoder: TextEncoder | None = TextEncoder.from_str(encoder) if encoder else None
        self._data: LabelledData | None = None

    # ------------------------------------------------------------------ loading
    def prepare(self) -> "EQNDataModule":
        """Read, subsample, tokenise (once; cached on disk) and build gold masks and initial targets.

        Splits and subsets depend on `split_seed` only, so every run seed sees the same rows."""
        if self._data is not None:
            return self
        data = sources.load(
            self.name, self.data_dir, on_bad_rows=self.on_bad_rows, seed=self.split_seed, **self.reader_options
        )
        if self.val_from_train:  # the authors' script: a seeded 10% of train is the validation split
            data.splits["train"], data.splits["val"] = sources.carve(
                data.splits["train"],
                self.reader_options.get("val_fraction", 0.1),
                self.split_seed,
                stratify=not data.multi_label,
            )
        for split, limit in (
            ("train", self.max_train_samples),
            ("val", self.max_eval_samples),
            ("test", self.max_eval_samples),
        ):
            n = len(data.splits[split])
            if limit is not None and limit > n:
                raise ConfigError(
                    f"data.max_{'train' if split == 'train' else 'eval'}_samples={limit} is larger than "
                    f"the {split} split of {data.name} ({n} rows)"
                )
            if limit is not None and limit < n:
                keep = np.sort(np.random.default_rng(self.split_seed).choice(n, limit, replace=False))
                data.splits[split] = data.splits[split].subset(keep)
        check_splits(data)
        self._data = data
        cached = self._cache_path(data)
        payload = read_cache(cached) if cached is not None and cached.exists() else None
        if payload is not None:
            self._encoder, self.token_ids, self.lengths = payload
            log.info("token ids loaded from cache %s", cached)
        else:
            if self._encoder is None:
                self._encoder = build_encoder(self.tokenizer_spec, data.splits["train"].texts)
            self.token_ids, self.lengths = {}, {}
            for split in SPLITS:
                ids, lengths = self.encoder.encode(data.splits[split].texts, self.max_length)
                self.token_ids[split], self.lengths[split] = torch.from_numpy(ids), torch.from_numpy(lengths)
            if cached is not None:
                try:
                    write_cache(cached, self.encoder, self.token_ids, self.lengths)
                except OSError as err:  # a read-only or full cache dir costs time, not the run
                    log.warning("cannot write the token cache %s (%s); continuing without it", cached, err.strerror)
        c = len(data.label_names)
        self.gold = {s: gold_mask(data.splits[s].labels, c) for s in SPLITS}
        # the live training and validation targets (label regression rewrites them in place)
        self.targets = init_targets(self.gold["train"], self.scale)
        self.val_targets = init_targets(self.gold["val"], self.scale)
        return self

    @property
    def spec(self) -> DataSpec:
        return DataSpec(
            tuple(self.label_names),
            self.multi_label,
            self.encoder.vocab_size,
            self.encoder.pad_id,
            self.encoder.to_str(),
            self.encoder.kind,
            self.max_length,
            tuple(self.gold["train"].float().mean(0).tolist()),
        )

    def _cache_path(self, data: LabelledData) -> Path | None:
        if not self.cache_dir or not data.files:
            return None
        key = {
            "v": CACHE_VERSION,
            "name": self.name,
            "opts": self.reader_options,
            "tok": self.tokenizer_spec,
            "encoder": self._encoder.to_str() if self._encoder else None,
            "max_length": self.max_length,
            "limits": [self.max_train_samples, self.max_eval_samples],
            "split_seed": self.split_seed,
            "val_from_train": self.val_from_train,
            "bad": self.on_bad_rows,
        }
        return Path(self.cache_dir) / f"{self.name.replace(':', '_')}-{digest(key, data.files)[:16]}.safetensors"

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # ------------------------------------------------------------------ facts
    @property
    def data(self) -> LabelledData:
        """The rows prepare() read."""
        if self._data is None:
            raise RuntimeError("the data module is not prepared yet: call prepare() first")
        return self._data

    @property
    def encoder(self) -> TextEncoder:
        """The tokenizer the rows were encoded with (given, cached or built by prepare())."""
        if self._encoder is None:
            raise RuntimeError("the data module has no encoder yet: call prepare() first")
        return self._encoder

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
        sampler: Sampler[int]
        if shuffle:
            sampler = BucketSampler(lengths, self.batch_size, self.seed, self.bucket_batches)
            batch_size = self.batch_size
        else:  # longest first: the largest batch shows its memory at once
            sampler = OrderedSampler(np.argsort(-lengths, kind="stable").tolist())
            batch_size = self.eval_batch_size
        targets = {"train": self.targets, "val": self.val_targets}.get(split)
        collate = Collator(self.token_ids[split], self.lengths[split], self.gold[split], targets)
        return DataLoader(
            cast(Dataset, range(len(lengths))),  # the sampler's indices; the collator reads the rows
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_loader(self, split: str) -> DataLoader:
        return self._loader(split, shuffle=False)
