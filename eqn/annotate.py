"""Micro-emotion annotation: every text gets a 0..scale intensity for every label.

    python -m eqn.annotate ckpt=run/checkpoints/eqn.ckpt input=texts.csv output=annotated.csv [text_column=text]
                           [batch_size=64] [chunk_size=20000] [overwrite=false] [header=true]
    python -m eqn.annotate ckpt=... input=- output=out.csv      # plain text, one per line, from stdin
    python -m eqn.annotate ckpt=... input=big.csv output=out.parquet precision=int8   # fp32 | bf16 | int8
    python -m eqn.annotate ckpt=... input=big.csv output=out.csv shards=4 shard=$SLURM_ARRAY_TASK_ID
                                            # one of 4 resumable shard jobs; the last one merges, in input order

    from eqn import load; load(ckpt).annotate(["what a day", ...])  # -> pandas DataFrame
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback
from tqdm import tqdm

from eqn.data.datamodule import length_sorted_scores
from eqn.data.tokenize import TextEncoder
from eqn.errors import ConfigError, DataError
from eqn.io import atomic_path, digest
from eqn.models.module import EQNModule, load_module
from eqn.ownership import check_output, umask
from eqn.relabeled import intensity_frame
from eqn.tables import ChunkWriter, check_input, output_format, read_chunks

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
            return self.batches[dist.get_rank()::dist.get_world_size()]
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


class Annotator:
    """precision: fp32; bf16 (autocast, CPU or GPU); int8 (dynamic quantisation of the Linear layers, CPU); fast (the
    fastest path, then fp32 for every row whose decisions it could have got wrong: fp32's `emotions`; eqn/fast.py)."""

    def __init__(self, module: EQNModule, device: str = "cpu", precision: str = "fp32", devices: int = 1,
                 long_texts: str = "truncate"):
        check_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
        from eqn.precision import annotation_precision

        self.asked_precision = precision
        precision, self.precision_reason = annotation_precision(precision, device)
        if precision in ("int8", "fast") and not str(device).startswith("cpu"):
            raise ConfigError(f"precision={precision} is CPU-only (int8 weights); use bf16 on a GPU")
        from eqn.models.backbones import merge_lora

        self.module = merge_lora(module).to(device).eval()  # a LoRA delta merged: a plain model at inference
        if hasattr(self.module.backbone, "fold"):  # TextCNN/CNN: convolutions become table lookups
            self.module.backbone.fold()
        if precision == "int8":
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # per-channel weight scales: half the intensity error of per-tensor ones at the same speed (measured)
            self.module = quantize_dynamic(self.module, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                           dtype=torch.qint8)
        if devices > 1 and precision in ("int8", "fast"):
            raise ConfigError(f"precision={precision} runs in one process; use devices=1 (or fp32/bf16 with devices>1)")
        self.fast = None
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
            raise ConfigError(f"this model has a label named {self.emotions_column!r}, which would share a column with "
                              "the decisions; pass emotions_column=<another name>")

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "cpu", precision: str = "fp32",
                        devices: int = 1, long_texts: str = "truncate") -> "Annotator":
        """A run checkpoint, an exported model folder, a hub repo id of one, or None / "builtin": the built-in
        annotator (eqn/builtin.py)."""
        from eqn.export import load_folder
        from eqn.hub import resolve_model

        check_device(device)  # before loading: a CUDA-saved tensor on a CPU machine would be a confusing error
        if path is None or str(path) == BUILTIN:
            from eqn.builtin import load_builtin

            return cls(load_builtin(device=device), device, precision, devices, long_texts)
        path = resolve_model(path)
        module = load_folder(path, device) if path.is_dir() else load_module(path, map_location=device)
        return cls(module, device, precision, devices, long_texts)

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
            texts if windows else [t[:limit] for t in texts], self.max_length, parallel=True,
            overlap=max(1, self.max_length // 4) if windows else None)
        long = self.encoder.overflowed | (np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) > limit
                                          if not windows else False)
        self.long += int(long.sum())
        ids, lengths, owner = torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(owner)
        if self.devices > 1 and len(lengths) > batch_size:  # whole batches per rank: at least two batches
            return self.per_text(self.scores_distributed(ids, lengths, batch_size), owner, len(texts))
        if self.fast is not None and not self.fast.calibrated:  # first use of this model: pick the engine
            first = torch.arange(min(len(lengths), CALIBRATION_TEXTS))
            self.fast.calibrate(ids[first], lengths[first], batch_size, self.scores_local, self.thresholds,
                                bool(self.module.hparams.multi_label))
        if self.fast is not None and self.fast.engine is not None:
            return self.scores_fast(ids, lengths, batch_size, owner, len(texts))
        return self.per_text(self.scores_local(ids, lengths, batch_size), owner, len(texts))

    @staticmethod
    def per_text(window_scores: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """Each text's scores: the maximum, label by label, over its windows (one window: its scores)."""
        if len(owner) == n:
            return window_scores
        out = torch.full((n, window_scores.shape[1]), float("-inf"), dtype=window_scores.dtype)
        return out.scatter_reduce(0, owner.long().unsqueeze(1).expand_as(window_scores), window_scores, "amax")

    def scores_local(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
        def score(batch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            with torch.autocast(str(self.device).split(":")[0], dtype=torch.bfloat16,
                                enabled=self.precision == "bf16"):
                logits = self.module(batch.to(self.device), mask.to(self.device))
            return self.module.scores(logits.float()).cpu()

        return length_sorted_scores(score, ids, lengths, batch_size, len(self.label_names))

    def scores_fast(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int, owner: torch.Tensor,
                    n: int) -> torch.Tensor:
        """The fast engine's scores; fp32's for the texts whose decisions the engine could have got wrong (judged on
        each text's own scores, after its windows are combined: every window of such a text is rescored)."""
        fast = self.fast.engine_scores(ids, lengths, batch_size)
        texts = self.fast.uncertain(self.per_text(fast, owner, n), self.thresholds,
                                    bool(self.module.hparams.multi_label))
        need = texts[owner.long()].nonzero().flatten()
        if len(need):
            fast[need] = self.scores_local(ids[need], lengths[need], batch_size)
        self.fast.rows += n
        self.fast.rescored += int(texts.sum())
        return self.per_text(fast, owner, n)

    def scores_distributed(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Lightning `trainer.predict` over `devices` processes (ddp_spawn), rows gathered back by index: the same
        batches as one process (longest first), so the same scores."""
        from lightning.pytorch import Trainer
        from torch.utils.data import DataLoader

        from eqn.data.datamodule import Collator
        from eqn.predict import predict_scores

        order = torch.argsort(lengths, descending=True).tolist()
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        gold = torch.zeros(len(lengths), len(self.label_names), dtype=torch.bool)
        loader = DataLoader(range(len(lengths)), batch_sampler=RankBatches(batches),
                            collate_fn=Collator(ids, lengths, gold, None))
        accelerator = "gpu" if str(self.device).startswith("cuda") else "cpu"
        trainer = Trainer(accelerator=accelerator, devices=min(self.devices, len(batches)), strategy="ddp_spawn", logger=False,
                          enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                          precision="bf16-mixed" if self.precision == "bf16" else "32-true",
                          use_distributed_sampler=False)
        trainer.callbacks.append(LeaveTogether())
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

    def annotate_frame(self, frame: pd.DataFrame, text_column: str = "text", batch_size: int = BATCH_SIZE,
                       source: str = "input", lines: list[int] | None = None) -> pd.DataFrame:
        """The input columns, untouched, then one intensity column per label and the decisions. An input column
        with one of those names is refused (DataError), never overwritten."""
        self.set_columns(self.label_columns_prefix, self.emotions_column)
        clash = sorted(set(frame.columns) & set(self.added_columns()))
        if clash:
            how = (f"choose another prefix= than {self.label_columns_prefix!r}, or rename them" if
                   self.label_columns_prefix else "pass prefix=<text> (e.g. prefix=eqn_ gives eqn_joy, eqn_emotions) "
                   "or rename them")
            raise DataError(source, f"input column(s) {clash} would be overwritten by the annotation's columns; "
                                    + how)
        texts = frame[text_column].tolist()
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(source, f"text {texts[bad]!r} in column {text_column!r} is missing or not a string",
                            lines[bad] if lines else bad + 1)
        scores = self.scores(texts, batch_size)
        out = intensity_frame({c: frame[c].astype(object) for c in frame.columns}, self.intensities(scores),
                              self.label_columns)
        out[self.emotions_column] = self.emotions(scores)
        return out

    def annotate(self, texts: list[str] | str, batch_size: int = BATCH_SIZE) -> pd.DataFrame:
        """A DataFrame: one row per text (a single string is one text), its intensities and decisions."""
        if isinstance(texts, str):
            texts = [texts]
        elif not hasattr(texts, "__iter__"):
            raise TypeError(f"annotate() takes a text or a list of texts, not {type(texts).__name__}")
        return self.annotate_frame(pd.DataFrame({"text": list(texts)}, dtype=object), "text", batch_size)


# ------------------------------------------------------------------------------ files


def annotate_file(ckpt: str | None, input: str, output: str, text_column: str = "text", batch_size: int = BATCH_SIZE,
                  chunk_size: int = 20000, overwrite: bool = False, device: str = "cpu", progress: bool = True,
                  header: bool = True, precision: str = "fp32", shards: int = 1, shard: int = 0,
                  devices: int = 1, prefix: str = "", emotions_column: str | None = None,
                  long_texts: str = "truncate") -> dict:
    """Annotate a file chunk by chunk: the output holds exactly the input's rows, in order, with its columns and
    values unchanged, then one intensity column per label and the decisions. With shards=K, this call does shard
    `shard` (chunks c with c % K == shard), each chunk written atomically under <output>.shards/ (a finished chunk
    is never redone; the folder records which job made its chunks, and another job's chunks are refused); the
    shard that finds every chunk done merges them, in input order, into <output> (byte-identical to one process).
    Every argument, the input and the output path are checked before the model is loaded."""
    ckpt = BUILTIN if ckpt in (None, "") else ckpt
    for key, value in (("batch_size", batch_size), ("chunk_size", chunk_size), ("shards", shards),
                       ("devices", devices)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key}={value!r}: must be a whole number of at least 1")
    if not isinstance(shard, int) or not 0 <= shard < shards:
        raise ConfigError(f"shard={shard!r}: must lie in 0..{shards - 1} (shards={shards})")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
    if long_texts not in LONG_TEXTS:
        raise ConfigError(f"long_texts={long_texts!r}: choose one of {list(LONG_TEXTS)}")
    fmt = output_format(output)
    check_input(input)
    if output == "-" and shards > 1:
        raise ConfigError("output=- (stdout) cannot be merged from shards; give an output file")
    if shards > 1 and input == "-":
        raise ConfigError("shards>1 needs an input file (every shard reads the input), not stdin")
    out_path = Path(output)
    parts = out_path.with_name(out_path.name + ".shards")
    job = shard_job(ckpt, input, chunk_size, text_column, header, precision, fmt, prefix, emotions_column,
                    long_texts) if shards > 1 else None
    if job is not None and merged_by(out_path) == digest(job):
        if parts.exists():  # what a killed shard left (its temporaries, the job record): eqn's own only
            from eqn.ownership import remove_owned

            remove_owned(parts)
        print(f"{out_path}: already merged from this job's shards; nothing to do", file=sys.stderr)
        return {"texts": None, "annotated_here": 0, "seconds": 0.0, "texts_per_s": 0.0, "output": str(out_path),
                "complete": True}
    if output != "-":
        check_output(out_path, overwrite, inputs=[input] + ([ckpt] if ckpt != BUILTIN else []))
    annotator = Annotator.from_checkpoint(ckpt, device, precision, devices, long_texts)
    if ckpt == BUILTIN:
        from eqn.builtin import describe

        print(f"model: {describe(annotator.module.builtin)} (eqn's built-in annotator; `python -m eqn.annotate "
              "about` prints its card)", file=sys.stderr)
    annotator.set_columns(prefix, emotions_column)
    if annotator.asked_precision == "auto":
        print(f"precision=auto: {annotator.precision} ({annotator.precision_reason})", file=sys.stderr)
    if job is not None:
        claim_parts(parts, job)
    started, n, done = time.perf_counter(), 0, 0
    bar = tqdm(desc="annotating", unit="text", disable=not progress, file=sys.stderr)
    try:
        if shards == 1:
            n = done = write_annotated(annotator, read_chunks(input, text_column, chunk_size, header), out_path, fmt,
                                       text_column, batch_size, str(input), bar)
        else:
            count = 0
            for c, chunk in enumerate(read_chunks(input, text_column, chunk_size, header)):
                count = c + 1
                n += len(chunk.frame)
                part = parts / f"chunk-{c:08d}.{fmt}"
                if c % shards != shard or part.exists():
                    continue
                done += write_annotated(annotator, [chunk], part, fmt, text_column, batch_size, str(input), bar)
            if n == 0:
                raise DataError(input, "input is empty: no texts to annotate")
            merge_parts(parts, count, out_path, fmt, digest(job))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    stats = {"texts": n, "annotated_here": done, "seconds": seconds, "texts_per_s": done / max(seconds, 1e-9),
             "output": str(out_path), "complete": output == "-" or out_path.exists()}
    where = out_path if stats["complete"] else f"{out_path} (waiting for the other shards)"
    stats["longer_than_max"] = annotator.long
    longer = (f"; {annotator.long} longer than the model's {annotator.max_length} tokens: "
              + ("scored in overlapping windows (max per label)" if long_texts == "windows" else
                 "cut there (long_texts=windows scores them whole)")) if annotator.long else ""
    print(f"annotated {done} texts in {seconds:.1f} s ({stats['texts_per_s']:.0f} texts/s){longer} -> {where}",
          file=sys.stderr)
    return stats


def write_annotated(annotator: Annotator, chunks, out_path: Path, fmt: str, text_column: str, batch_size: int,
                    source: str, bar) -> int:
    """Annotate `chunks` into one output (a temporary file renamed at the end, or stdout); returns the rows."""
    n = 0

    def write_all(target) -> None:
        nonlocal n
        writer = None
        try:
            for chunk in chunks:
                frame = annotator.annotate_frame(chunk.frame, text_column, batch_size, source, chunk.lines)
                writer = writer or ChunkWriter(target, fmt, chunk.frame.shape[1], str(out_path))
                writer.write(frame, chunk)
                n += len(chunk.frame)
                bar.update(len(chunk.frame))
        finally:
            if writer is not None:
                writer.close()
        if n == 0:
            raise DataError(source, "input is empty: no texts to annotate")

    if str(out_path) == "-":
        write_all(sys.stdout)
    else:
        with atomic_path(out_path) as tmp:
            write_all(tmp)
    return n


def shard_job(ckpt: str, input: str, chunk_size: int, text_column: str, header: bool, precision: str, fmt: str,
              prefix: str, emotions_column: str | None, long_texts: str = "truncate") -> dict:
    """What makes a shard job's chunks: the model's and the input's content, and every option that changes rows."""
    from eqn.hub import resolve_model

    if ckpt == BUILTIN:
        import eqn.builtin as builtin

        model = builtin.FOLDER
        files = [model / builtin.SPEC, model / builtin.WEIGHTS]
    else:
        model = resolve_model(ckpt)
        files = sorted(p for p in model.rglob("*") if p.is_file() and ".eqn" not in p.parts) if model.is_dir() else [model]
    return {"model": digest({}, files), "input": digest({}, [input]), "chunk_size": chunk_size,
            "text_column": text_column, "header": header, "precision": precision, "format": fmt, "prefix": prefix,
            "emotions_column": emotions_column, **({"long_texts": long_texts} if long_texts != "truncate" else {})}


def merged_by(out_path: Path) -> str | None:
    """The shard job (its digest) whose chunks eqn merged into `out_path`, if the file is still exactly that."""
    from eqn.ownership import owned_entry

    entry = owned_entry(out_path) if out_path.exists() else None
    return entry.get("merged_job") if entry else None


def claim_parts(parts: Path, job: dict) -> None:
    """<output>.shards/job.json names the job whose chunks the folder holds; another job's folder is refused."""
    import json
    import os

    from eqn.ownership import drop_temp, make_temp, owns_file, record

    record_path = parts / "job.json"
    if parts.exists() and not record_path.exists():
        raise ConfigError(f"{parts}: exists but holds no eqn shard job; move it away (eqn uses this folder for the "
                          "chunks of shards>1)")
    if not record_path.exists():
        parts.mkdir(parents=True, exist_ok=True)
        tmp = make_temp(parts, "job.json")
        tmp.write_text(json.dumps(job, sort_keys=True))
        try:
            os.link(tmp, record_path)  # exactly one shard creates the record; the others read it
            os.chmod(record_path, 0o666 & ~umask())
            record(record_path, parts)
        except FileExistsError:
            pass
        finally:
            drop_temp(tmp)
    try:
        theirs = json.loads(record_path.read_text())
    except ValueError:
        theirs = None
    if not owns_file(record_path) and theirs != job:
        raise ConfigError(f"{record_path}: not written by eqn; move {parts} away")
    if theirs != job:
        changed = sorted(k for k in job if not isinstance(theirs, dict) or theirs.get(k) != job[k])
        raise ConfigError(f"{parts} holds the chunks of another job (different {', '.join(changed)}); finish that "
                          f"job, or delete {parts} to start this one")


MERGE_WAIT_S = 600.0  # how long a shard whose chunks are all there waits for another shard's merge


def merge_parts(parts: Path, count: int, out_path: Path, fmt: str, job: str | None = None) -> bool:
    """If every chunk file 0..count-1 exists, concatenate them in order into `out_path` (atomically), then remove
    the chunk files and job record eqn wrote (anything else in the folder stays); one merger at a time (a lock in
    the parts folder: a shard finding another merging waits for it, and merges itself if that one died before
    finishing). Returns whether the output was written."""
    from eqn.io import RunLock
    from eqn.ownership import owns_file, record, remove_owned

    files = [parts / f"chunk-{c:08d}.{fmt}" for c in range(count)]
    if not all(f.exists() for f in files):
        return False
    try:  # another shard merging: wait for it (its lock ends with its process, however it ends), then check
        lock = RunLock(parts, wait=MERGE_WAIT_S).__enter__()
    except ConfigError as err:
        raise ConfigError(f"{err}; {out_path} is not merged yet: rerun this command once that process has "
                          "ended, and it merges the shards' chunks") from None
    try:
        if out_path.exists():
            return True  # merged by another shard meanwhile
        stray = next((f for f in files if not owns_file(f)), None)
        if stray is not None:
            raise ConfigError(f"{stray}: a chunk file not written by eqn (or changed since); delete it to redo it")
        with atomic_path(out_path) as tmp:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                writer = None
                for f in files:
                    table = pq.read_table(f)
                    writer = writer or pq.ParquetWriter(str(tmp), table.schema)
                    writer.write_table(table)
                writer.close()
            else:
                with open(tmp, "wb") as out:
                    for i, f in enumerate(files):
                        data = f.read_bytes()
                        if i > 0 and fmt in ("csv", "tsv"):  # every part has the header; keep the first
                            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                        out.write(data)
        record(out_path, merged_job=job)  # a shard arriving after the merge finds its job done
    finally:
        lock.__exit__(None, None, None)
    remove_owned(parts)
    return True


USAGE = ("usage: python -m eqn.annotate [ckpt=<checkpoint|folder|hub id|builtin>] input=<file|-> output=<file|-> "
         "[text_column=text] [batch_size=64] [chunk_size=20000] [overwrite=true] [precision=fp32|fast|bf16|int8|auto] "
         "[shards=K shard=i] [devices=N] [header=false] [prefix=eqn_] [emotions_column=emotions] "
         "[long_texts=truncate|windows]")


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import parse

    argv = list(argv if argv is not None else sys.argv[1:])
    if argv[:1] == ["about"]:  # the built-in annotator's model card
        import eqn.builtin as builtin

        try:
            builtin.read_spec()
        except DataError as err:
            sys.exit(f"eqn.annotate: {err}")
        print((builtin.FOLDER / builtin.CARD).read_text(encoding="utf-8"))
        return
    args = parse(argv, "eqn.annotate", USAGE,
                 known=("ckpt", "input", "output", "text_column", "batch_size", "chunk_size", "overwrite", "device",
                        "progress", "header", "precision", "shards", "shard", "devices", "prefix", "emotions_column",
                        "long_texts"),
                 required=("input", "output"), aliases={"trainer.devices": "devices"},
                 ints={"batch_size": 1, "chunk_size": 1, "shards": 1, "shard": 0, "devices": 1},
                 bools=("overwrite", "progress", "header"))
    try:
        annotate_file(**{"ckpt": None, **args})
    except (DataError, ConfigError) as err:
        sys.exit(f"eqn.annotate: {err}")
    except KeyboardInterrupt:
        print(f"eqn.annotate: interrupted; nothing was written to {args['output']} (finished shard chunks are kept: "
              "rerun the same command to resume)", file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        sys.exit(f"eqn.annotate: {err.filename or args['output']}: {err.strerror or err}")


if __name__ == "__main__":
    main()
