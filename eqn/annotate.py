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

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from lightning.pytorch import Callback
from tqdm import tqdm

from eqn.data.datamodule import pad_batch
from eqn.data.tokenize import TextEncoder
from eqn.io import ConfigError, DataError, atomic_path
from eqn.models.module import EQNModule, load_module
from eqn.relabeled import intensity_frame


MAX_CHARS_PER_TOKEN = 32
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


PRECISIONS = ("fp32", "bf16", "int8")


def check_device(device: str) -> None:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA GPU is visible on this machine (use device=cpu)")


class Annotator:
    """precision: fp32; bf16 (autocast, CPU or GPU); int8 (dynamic quantisation of the Linear layers, CPU)."""

    def __init__(self, module: EQNModule, device: str = "cpu", precision: str = "fp32", devices: int = 1):
        check_device(device)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
        if precision == "int8" and not str(device).startswith("cpu"):
            raise ConfigError("precision=int8 is CPU-only (dynamic quantisation); use bf16 on a GPU")
        self.module = module.to(device).eval()
        if hasattr(self.module.backbone, "fold"):  # TextCNN/CNN: convolutions become table lookups
            self.module.backbone.fold()
        if precision == "int8":
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # per-channel weight scales: half the intensity error of per-tensor ones at the same speed (measured)
            self.module = quantize_dynamic(self.module, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                           dtype=torch.qint8)
        if devices > 1 and precision == "int8":
            raise ConfigError("precision=int8 runs in one process; use devices=1 (or fp32/bf16 with devices>1)")
        self.precision, self.devices = precision, devices
        self.device, self.max_length = device, int(module.hparams.get("max_length", 128))
        self.encoder = TextEncoder.from_str(module.hparams.encoder)
        self.label_names: list[str] = list(module.hparams.label_names)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", precision: str = "fp32",
                        devices: int = 1) -> "Annotator":
        """A run checkpoint, an exported model folder, or a hub repo id of one."""
        from eqn.export import load_folder, resolve_model

        check_device(device)  # before loading: a CUDA-saved tensor on a CPU machine would be a confusing error
        path = resolve_model(path)
        module = load_folder(path, device) if path.is_dir() else load_module(path, map_location=device)
        return cls(module, device, precision, devices)

    @property
    def thresholds(self) -> torch.Tensor:
        return self.module.thresholds.detach().cpu()

    @torch.inference_mode()
    def scores(self, texts: list[str], batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """(N x C) intensities; batches sorted by length so padding stays small. Texts are cut to
        MAX_CHARS_PER_TOKEN x max_length characters first: the model sees at most max_length tokens anyway."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        limit = MAX_CHARS_PER_TOKEN * self.max_length
        ids, lengths = self.encoder.encode([t[:limit] for t in texts], self.max_length, parallel=True)
        ids, lengths = torch.from_numpy(ids), torch.from_numpy(lengths)
        if self.devices > 1:
            return self.scores_distributed(ids, lengths, batch_size)
        order = torch.argsort(lengths, descending=True)
        out = torch.empty(len(texts), len(self.label_names))
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch, mask = pad_batch(ids, lengths, idx)
            with torch.autocast(str(self.device).split(":")[0], dtype=torch.bfloat16,
                                enabled=self.precision == "bf16"):
                logits = self.module(batch.to(self.device), mask.to(self.device))
            out[idx] = self.module.scores(logits.float()).cpu()
        return out

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
        trainer = Trainer(accelerator=accelerator, devices=self.devices, strategy="ddp_spawn", logger=False,
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
        return [*self.label_names, "emotions"]

    def annotate_frame(self, frame: pd.DataFrame, text_column: str = "text", batch_size: int = BATCH_SIZE,
                       source: str = "input", first_line: int = 1) -> pd.DataFrame:
        """The input columns, untouched, then one intensity column per label and `emotions`. An input column
        with one of those names is refused (DataError), never overwritten."""
        clash = sorted(set(frame.columns) & set(self.added_columns()))
        if clash:
            raise DataError(source, f"input column(s) {clash} would be overwritten by the annotation's columns; "
                                     "rename them in the input")
        texts = frame[text_column].tolist()
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(source, f"text {texts[bad]!r} in column {text_column!r} is missing or not a string",
                            first_line + bad)
        scores = self.scores(texts, batch_size)
        out = intensity_frame({c: frame[c].tolist() for c in frame.columns}, self.intensities(scores), self.label_names)
        out["emotions"] = self.emotions(scores)
        return out

    def annotate(self, texts: list[str], batch_size: int = BATCH_SIZE) -> pd.DataFrame:
        return self.annotate_frame(pd.DataFrame({"text": list(texts)}), "text", batch_size)


# ------------------------------------------------------------------------------ files


def read_chunks(source: str, text_column: str, chunk_size: int, header: bool = True) -> Iterator[pd.DataFrame]:
    """Input in chunks of rows: .csv, .tsv, .jsonl, or '-' for plain text lines on stdin.
    header=False: a CSV/TSV without a header row; its first column is the text (named `text_column`)."""
    if source == "-":
        lines: list[str] = []
        for line in sys.stdin:
            lines.append(line.rstrip("\r\n"))
            if len(lines) == chunk_size:
                yield pd.DataFrame({text_column: lines})
                lines = []
        if lines:
            yield pd.DataFrame({text_column: lines})
        return
    path = Path(source)
    if not path.exists():
        raise DataError(path, "input file not found")
    if path.is_dir():
        raise DataError(path, "input is a directory, not a file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            reader = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                                 chunksize=chunk_size, encoding="utf-8", header=0 if header else None,
                                 quoting=0 if header else 3)
        elif suffix in (".jsonl", ".json"):
            reader = pd.read_json(path, lines=True, chunksize=chunk_size, dtype=False, precise_float=True,
                                  encoding="utf-8")
        elif suffix == ".txt":
            reader = pd.read_csv(path, sep="\x01", header=None, names=[text_column], dtype=str, keep_default_na=False,
                                 chunksize=chunk_size, quoting=3, encoding="utf-8")
        else:
            raise DataError(path, f"unsupported input type {suffix!r}: use .csv, .tsv, .jsonl, .txt or '-'")
        for chunk in reader:
            if not header:
                chunk = chunk.rename(columns=lambda i: text_column if i == 0 else f"column_{i}")
            if text_column not in chunk.columns:
                raise DataError(path, f"no column {text_column!r}; the input has {list(chunk.columns)} "
                                      "(set text_column=...)", 1)
            yield chunk
    except pd.errors.EmptyDataError:
        raise DataError(path, "input is empty") from None
    except (UnicodeDecodeError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(path, f"cannot be read: {err}") from None


class ChunkWriter:
    """Writes annotated chunks as they come (memory does not grow with the input): CSV, TSV, JSONL or Parquet."""

    def __init__(self, path: Path, fmt: str):
        self.fmt, self.parquet = fmt, None
        self.handle = None if fmt == "parquet" else open(path, "w", encoding="utf-8", newline="")
        self.path, self.first = path, True

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(str(self.path), table.schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
        elif self.fmt == "jsonl":  # valid JSON: NaN becomes null
            for record in frame.astype(object).where(frame.notna(), None).to_dict(orient="records"):
                self.handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        else:
            frame.to_csv(self.handle, sep="\t" if self.fmt == "tsv" else ",", index=False, header=self.first,
                         float_format="%.2f")
        self.first = False

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None:
            self.handle.close()


def annotate_file(ckpt: str, input: str, output: str, text_column: str = "text", batch_size: int = BATCH_SIZE,
                  chunk_size: int = 20000, overwrite: bool = False, device: str = "cpu", progress: bool = True,
                  header: bool = True, precision: str = "fp32", shards: int = 1, shard: int = 0,
                  devices: int = 1) -> dict:
    """Annotate a file chunk by chunk. With shards=K, this call does shard `shard` (chunks c with c % K == shard),
    each chunk written atomically under <output>.shards/ (a finished chunk is never redone); the shard that finds
    every chunk done merges them, in input order, into <output> (byte-identical to a single process)."""
    for key, value in (("batch_size", batch_size), ("chunk_size", chunk_size), ("shards", shards),
                       ("devices", devices)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r}: must be a whole number of at least 1")
    if not isinstance(shard, int) or not 0 <= shard < shards:
        raise ConfigError(f"shard={shard!r}: must lie in 0..{shards - 1} (shards={shards})")
    out_path = Path(output)
    if input != "-" and Path(input).resolve() == out_path.resolve():
        raise DataError(out_path, "output would overwrite the input; choose another output path")
    if out_path.exists() and not overwrite:
        raise DataError(out_path, "output exists; pass overwrite=true to replace it")
    if shards > 1 and input == "-":
        raise ConfigError("shards>1 needs an input file (every shard reads the input), not stdin")
    fmt = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(out_path.suffix.lower(), "csv")
    annotator = Annotator.from_checkpoint(ckpt, device, precision, devices)
    offset = 2 if header and Path(input).suffix.lower() in (".csv", ".tsv") else 1
    started, n, done = time.perf_counter(), 0, 0
    bar = tqdm(desc="annotating", unit="text", disable=not progress, file=sys.stderr)
    if shards == 1:
        with atomic_path(out_path) as tmp:
            writer = ChunkWriter(tmp, fmt)
            try:
                for chunk in read_chunks(input, text_column, chunk_size, header):
                    writer.write(annotator.annotate_frame(chunk, text_column, batch_size, str(input), n + offset))
                    n += len(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
            finally:
                writer.close()
                bar.close()
            if n == 0:
                raise DataError(input, "input is empty: no texts to annotate")
    else:
        parts = out_path.with_name(out_path.name + ".shards")
        parts.mkdir(exist_ok=True)
        count = 0
        for c, chunk in enumerate(read_chunks(input, text_column, chunk_size, header)):
            count, first = c + 1, n
            n += len(chunk)
            part = parts / f"chunk-{c:08d}.{fmt}"
            if c % shards != shard or part.exists():
                continue
            frame = annotator.annotate_frame(chunk, text_column, batch_size, str(input), first + offset)
            with atomic_path(part) as tmp:
                writer = ChunkWriter(tmp, fmt)
                writer.write(frame)
                writer.close()
            done += len(chunk)
            bar.update(len(chunk))
        bar.close()
        if n == 0:
            raise DataError(input, "input is empty: no texts to annotate")
        merge_parts(parts, count, out_path, fmt)
    seconds = time.perf_counter() - started
    stats = {"texts": n, "annotated_here": done, "seconds": seconds, "texts_per_s": done / max(seconds, 1e-9),
             "output": str(out_path), "complete": out_path.exists()}
    where = out_path if out_path.exists() else f"{out_path} (waiting for the other shards)"
    print(f"annotated {done} texts in {seconds:.1f} s ({stats['texts_per_s']:.0f} texts/s) -> {where}", file=sys.stderr)
    return stats


def merge_parts(parts: Path, count: int, out_path: Path, fmt: str) -> bool:
    """If every chunk file 0..count-1 exists, concatenate them in order into `out_path` (atomically) and remove the
    parts; one merger at a time (a lock in the parts folder). Returns whether the output was written."""
    from eqn.io import RunLock

    files = [parts / f"chunk-{c:08d}.{fmt}" for c in range(count)]
    if not all(f.exists() for f in files):
        return False
    try:
        lock = RunLock(parts).__enter__()
    except ConfigError:
        return False  # another shard is merging
    try:
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
    finally:
        lock.__exit__(None, None, None)
    shutil.rmtree(parts, ignore_errors=True)
    return True


def parse_key_values(argv: list[str]) -> dict:
    """key=value arguments; numbers and true/false are converted, paths stay strings."""
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"eqn.annotate: expected key=value, got {item!r}")
        key = "devices" if key == "trainer.devices" else key
        if key in ("batch_size", "chunk_size", "shards", "shard", "devices"):
            if not value.isdigit() or (int(value) < 1 and key != "shard"):
                sys.exit(f"eqn.annotate: {key}={value!r}: must be a whole number of at least 1")
            value = int(value)
        elif key in ("overwrite", "progress", "header"):
            value = value.lower() in ("1", "true", "yes")
        args[key] = value
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_key_values(argv if argv is not None else sys.argv[1:])
    missing = [k for k in ("ckpt", "input", "output") if k not in args]
    if missing:
        sys.exit(f"usage: python -m eqn.annotate ckpt=<checkpoint> input=<file|-> output=<file> [text_column=text] "
                 f"[batch_size=64] [chunk_size=20000] [overwrite=true] [precision=fp32|bf16|int8] [shards=K shard=i]"
                 f"  (missing: {', '.join(missing)})")
    known = {"ckpt", "input", "output", "text_column", "batch_size", "chunk_size", "overwrite", "device", "progress",
             "header", "precision", "shards", "shard", "devices"}
    unknown = sorted(set(args) - known)
    if unknown:
        sys.exit(f"eqn.annotate: unknown option(s) {unknown}; valid: {sorted(known)}")
    try:
        annotate_file(**args)
    except (DataError, ConfigError) as err:
        sys.exit(f"eqn.annotate: {err}")


if __name__ == "__main__":
    main()
