"""The scoring core: a model from any source (`load_model`) and the `Annotator` that turns texts into every label's
0..scale intensity and the decided emotions (precision modes, long texts, several processes). Training, validation,
`eqn.load` and the benchmarks use it; eqn.annotate adds files, shards and its command line around it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback

from eqn.data.datamodule import length_sorted_scores
from eqn.data.tokenize import TextEncoder
from eqn.errors import ConfigError, DataError
from eqn.model_folder import load_folder
from eqn.models.module import EQNModule, load_module
from eqn.relabeled import intensity_frame

if TYPE_CHECKING:
    from eqn.fast import FastScorer

MAX_CHARS_PER_TOKEN = 32
CALIBRATION_TEXTS = 512  # texts scored both ways the first time a model runs with precision=fast
BATCH_SIZE = 64  # measured fastest on 2 CPU cores for MiniLM and TextCNN (length-sorted batches; 256 was slower)


class LeaveTogether(Callback):
    """ddp_spawn workers exit right after predicting: wait for each other, then close the process group, so no
    worker tears gloo down while its peer still uses it."""

    def on_predict_end(self, trainer, pl_module) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class RankBatches:
    """Whole batches dealt round-robin to the ranks of the running process group (all of them when alone)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def _mine(self) -> list[list[int]]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return self.batches[dist.get_rank() :: dist.get_world_size()]
        return self.batches

    def __iter__(self):
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


PRECISIONS = ("fp32", "bf16", "int8", "fast", "auto")  # auto: bf16 where the hardware has it, else fp32
BUILTIN = "builtin"  # ckpt=builtin (or no ckpt): the annotator shipped in the package
LONG_TEXTS = ("truncate", "windows")  # a text longer than the model's max_length: cut, or max over windows


def check_device(device: str) -> None:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA GPU is visible on this machine (use device=cpu)")


def load_model(source: str | Path | None = None, device: str = "cpu") -> EQNModule:
    """An EQNModule from a run checkpoint, an exported model folder (any layout), a hub repo id of one, or None /
    "builtin" (the built-in annotator). Never runs code from the files: safetensors or weights-only checkpoints,
    JSON settings, backbones from eqn's allow-list."""
    from eqn.hub import resolve_model

    check_device(device)  # before loading: a CUDA-saved tensor on a CPU machine would be a confusing error
    if source is None or str(source) == BUILTIN:
        from eqn.builtin import load_builtin

        return load_builtin(device=device)
    path = resolve_model(source)
    return load_folder(path, device) if path.is_dir() else load_module(path, map_location=device)


class Annotator:
    """precision: fp32; bf16 (autocast, CPU or GPU); int8 (dynamic quantisation of the Linear layers, CPU); fast (the
    fastest path, then fp32 for every row whose decisions it could have got wrong: fp32's `emotions`; eqn/fast.py)."""

    def __init__(
        self,
        module: EQNModule,
        device: str = "cpu",
        precision: str = "fp32",
        devices: int = 1,
        long_texts: str = "truncate",
    ):
        check_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
        from eqn.precision import annotation_precision

        self.asked_precision = precision
        precision, self.precision_reason = annotation_precision(precision, device)
        if precision in ("int8", "fast") and not str(device).startswith("cpu"):
            raise ConfigError(f"precision={precision} is CPU-only (int8 weights); use bf16 on a GPU")
        from eqn.models.module import merge_lora

        self.module = merge_lora(module).to(device).eval()  # a LoRA delta merged: a plain model at inference
        fold = getattr(self.module.backbone, "fold", None)
        if fold is not None:  # TextCNN/CNN: convolutions become table lookups
            fold()
        if precision == "int8":
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # per-channel weight scales: half the intensity error of per-tensor ones at the same speed (measured)
            self.module = quantize_dynamic(
                self.module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
            )
        if devices > 1 and precision in ("int8", "fast"):
            raise ConfigError(f"precision={precision} runs in one process; use devices=1 (or fp32/bf16 with devices>1)")
        self.fast: FastScorer | None = None
        if precision == "fast":
            from eqn.fast import FastScorer

            self.fast = FastScorer(self.module)
        self.precision, self.devices = precision, devices
        self.device, self.max_length = device, int(module.hparams.get("max_length", 128))
        if long_texts not in LONG_TEXTS:
            raise ConfigError(f"long_texts={long_texts!r}: choose one of {list(LONG_TEXTS)}")
        self.long_texts, self.long = long_texts, 0  # how texts longer than max_length are scored; how many were
        self.encoder = TextEncoder.from_str(module.hparams.encoder)
        self.label_names: list[str] = list(module.hparams.label_names)
        self.label_columns_prefix, self.label_columns, self.emotions_column = "", list(self.label_names), "emotions"

    def set_columns(self, prefix: str = "", emotions_column: str | None = None) -> None:
        """Output column names: `prefix` + each label, and the decisions column (default `prefix` + 'emotions')."""
        from eqn.data.sources import check_label_names

        check_label_names(self.label_names, "this model's labels")
        self.label_columns_prefix = prefix
        self.label_columns = [f"{prefix}{n}" for n in self.label_names]
        self.emotions_column = emotions_column or f"{prefix}emotions"
        if self.emotions_column in self.label_columns:
            raise ConfigError(
                f"this model has a label named {self.emotions_column!r}, which would share a column with "
                "the decisions; pass emotions_column=<another name>"
            )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        devices: int = 1,
        long_texts: str = "truncate",
    ) -> "Annotator":
        """An annotator for `load_model(path)`: a run checkpoint, an exported model folder, a hub repo id of one,
        or None / "builtin": the built-in annotator (eqn/builtin.py)."""
        return cls(load_model(path, device), device, precision, devices, long_texts)

    @property
    def thresholds(self) -> torch.Tensor:
        return self.module.thresholds.detach().cpu()

    @torch.inference_mode()
    def scores(self, texts: list[str], batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """(N x C) intensities; batches sorted by length so padding stays small. A text longer than the model's
        max_length tokens is cut there (long_texts="truncate": texts are first cut to MAX_CHARS_PER_TOKEN x
        max_length characters, more than the model sees) or scored in overlapping windows of max_length tokens, each
        label's intensity the maximum over the windows (long_texts="windows"); `self.long` counts such texts."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        windows = self.long_texts == "windows"
        limit = MAX_CHARS_PER_TOKEN * self.max_length
        ids, lengths, owner = self.encoder.encode_windows(
            texts if windows else [t[:limit] for t in texts],
            self.max_length,
            parallel=True,
            overlap=max(1, self.max_length // 4) if windows else None,
        )
        long = self.encoder.overflowed | (
            np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) > limit if not windows else False
        )
        self.long += int(long.sum())
        ids_t, lengths_t, owner_t = (torch.from_numpy(a) for a in (ids, lengths, owner))
        return self.window_scores(ids_t, lengths_t, owner_t, len(texts), batch_size)

    def window_scores(
        self, ids: torch.Tensor, lengths: torch.Tensor, owner: torch.Tensor, n: int, batch_size: int
    ) -> torch.Tensor:
        """The n texts' scores from their windows' token ids (`owner`: the text of each window)."""
        if self.devices > 1 and len(lengths) > batch_size:  # whole batches per rank: at least two batches
            return self.per_text(self.scores_distributed(ids, lengths, batch_size), owner, n)
        if self.fast is not None and not self.fast.calibrated:  # first use of this model: pick the engine
            first = torch.arange(min(len(lengths), CALIBRATION_TEXTS))
            self.fast.calibrate(
                ids[first],
                lengths[first],
                batch_size,
                self.scores_local,
                self.thresholds,
                bool(self.module.hparams.multi_label),
            )
        if self.fast is not None and self.fast.engine is not None:
            return self.scores_fast(self.fast, ids, lengths, batch_size, owner, n)
        return self.per_text(self.scores_local(ids, lengths, batch_size), owner, n)

    @staticmethod
    def per_text(window_scores: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """Each text's scores: the maximum, label by label, over its windows (one window: its scores)."""
        if len(owner) == n:
            return window_scores
        out = torch.full((n, window_scores.shape[1]), float("-inf"), dtype=window_scores.dtype)
        return out.scatter_reduce(0, owner.long().unsqueeze(1).expand_as(window_scores), window_scores, "amax")

    def scores_local(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
        def score(batch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            with torch.autocast(str(self.device).split(":")[0], dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = self.module(batch.to(self.device), mask.to(self.device))
            return self.module.scores(logits.float()).cpu()

        return length_sorted_scores(score, ids, lengths, batch_size, len(self.label_names))

    def scores_fast(
        self,
        fast_scorer: FastScorer,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        batch_size: int,
        owner: torch.Tensor,
        n: int,
    ) -> torch.Tensor:
        """The fast engine's scores; fp32's for the texts whose decisions the engine could have got wrong (judged on
        each text's own scores, after its windows are combined: every window of such a text is rescored)."""
        fast = fast_scorer.engine_scores(ids, lengths, batch_size)
        texts = fast_scorer.uncertain(
            self.per_text(fast, owner, n), self.thresholds, bool(self.module.hparams.multi_label)
        )
        need = texts[owner.long()].nonzero().flatten()
        if len(need):
            fast[need] = self.scores_local(ids[need], lengths[need], batch_size)
        fast_scorer.rows += n
        fast_scorer.rescored += int(texts.sum())
        return self.per_text(fast, owner, n)

    def scores_distributed(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Lightning `trainer.predict` over `devices` processes (ddp_spawn), rows gathered back by index: the same
        batches as one process (longest first), so the same scores."""
        from lightning.pytorch import Trainer
        from torch.utils.data import DataLoader, Dataset

        from eqn.data.datamodule import Collator
        from eqn.predict import predict_scores

        order = torch.argsort(lengths, descending=True).tolist()
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        gold = torch.zeros(len(lengths), len(self.label_names), dtype=torch.bool)
        loader: DataLoader = DataLoader(
            cast(Dataset, range(len(lengths))),
            batch_sampler=RankBatches(batches),
            collate_fn=Collator(ids, lengths, gold, None),
        )
        accelerator = "gpu" if str(self.device).startswith("cuda") else "cpu"
        trainer = Trainer(
            accelerator=accelerator,
            devices=min(self.devices, len(batches)),
            strategy="ddp_spawn",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            precision="bf16-mixed" if self.precision == "bf16" else "32-true",
            use_distributed_sampler=False,
            callbacks=[LeaveTogether()],
        )
        return predict_scores(trainer, self.module, loader, len(lengths))

    def emotions(self, scores: torch.Tensor) -> list[str]:
        """Labels at or above their thresholds, highest first; the top label is always kept."""
        names = self.label_names
        keep = (scores >= self.thresholds) | torch.nn.functional.one_hot(scores.argmax(1), len(names)).bool()
        result = []
        for row, mask in zip(scores.tolist(), keep.tolist()):
            chosen = sorted((i for i, k in enumerate(mask) if k), key=lambda i: -row[i])
            result.append(",".join(names[i] for i in chosen))
        return result

    def intensities(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores on the 0..scale intensity range (a classifier checkpoint reports scale x probability)."""
        scale = float(self.module.hparams.scale)
        return (scores * (scale / self.module.score_scale)).clamp(0.0, scale)

    def added_columns(self) -> list[str]:
        return [*self.label_columns, self.emotions_column]

    def annotate_frame(
        self,
        frame: pd.DataFrame,
        text_column: str = "text",
        batch_size: int = BATCH_SIZE,
        source: str = "input",
        lines: list[int] | None = None,
    ) -> pd.DataFrame:
        """The input columns, untouched, then one intensity column per label and the decisions. An input column
        with one of those names is refused (DataError), never overwritten."""
        self.set_columns(self.label_columns_prefix, self.emotions_column)
        clash = sorted(set(frame.columns) & set(self.added_columns()))
        if clash:
            how = (
                f"choose another prefix= than {self.label_columns_prefix!r}, or rename them"
                if self.label_columns_prefix
                else "pass prefix=<text> (e.g. prefix=eqn_ gives eqn_joy, eqn_emotions) or rename them"
            )
            raise DataError(source, f"input column(s) {clash} would be overwritten by the annotation's columns; " + how)
        texts = frame[text_column].tolist()
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(
                source,
                f"text {texts[bad]!r} in column {text_column!r} is missing or not a string",
                lines[bad] if lines else bad + 1,
            )
        scores = self.scores(texts, batch_size)
        out = intensity_frame(
            {c: frame[c].astype(object) for c in frame.columns}, self.intensities(scores), self.label_columns
        )
        out[self.emotions_column] = self.emotions(scores)
        return out

    def annotate(self, texts: list[str] | str, batch_size: int = BATCH_SIZE) -> pd.DataFrame:
        """A DataFrame: one row per text (a single string is one text), its intensities and decisions."""
        if isinstance(texts, str):
            texts = [texts]
        elif not hasattr(texts, "__iter__"):
            raise TypeError(f"annotate() takes a text or a list of texts, not {type(texts).__name__}")
        return self.annotate_frame(pd.DataFrame({"text": list(texts)}, dtype=object), "text", batch_size)
