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

from tqdm import tqdm

from eqn.errors import ConfigError, DataError
from eqn.inference import BATCH_SIZE, BUILTIN, LONG_TEXTS, PRECISIONS, Annotator
from eqn.io import atomic_path, digest
from eqn.ownership import check_output, umask
from eqn.tables import ChunkWriter, check_input, output_format, read_chunks

# ------------------------------------------------------------------------------ files


def annotate_file(
    ckpt: str | None,
    input: str,
    output: str,
    text_column: str = "text",
    batch_size: int = BATCH_SIZE,
    chunk_size: int = 20000,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    header: bool = True,
    precision: str = "fp32",
    shards: int = 1,
    shard: int = 0,
    devices: int = 1,
    prefix: str = "",
    emotions_column: str | None = None,
    long_texts: str = "truncate",
    annotator: Annotator | None = None,
) -> dict:
    """Annotate a file chunk by chunk: the output holds exactly the input's rows, in order, with its columns and
    values unchanged, then one intensity column per label and the decisions. With shards=K, this call does shard
    `shard` (chunks c with c % K == shard), each chunk written atomically under <output>.shards/ (a finished chunk
    is never redone; the folder records which job made its chunks, and another job's chunks are refused); the
    shard that finds every chunk done merges them, in input order, into <output> (byte-identical to one process).
    Every argument, the input and the output path are checked before the model is loaded. `annotator`: a model
    already loaded from `ckpt` (eqn.app), used instead of loading it again."""
    ckpt = BUILTIN if ckpt in (None, "") else ckpt
    for key, value in (
        ("batch_size", batch_size),
        ("chunk_size", chunk_size),
        ("shards", shards),
        ("devices", devices),
    ):
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
    job = (
        shard_job(ckpt, input, chunk_size, text_column, header, precision, fmt, prefix, emotions_column, long_texts)
        if shards > 1
        else None
    )
    if job is not None and merged_by(out_path) == digest(job):
        if parts.exists():  # what a killed shard left (its temporaries, the job record): eqn's own only
            from eqn.ownership import remove_owned

            remove_owned(parts)
        print(f"{out_path}: already merged from this job's shards; nothing to do", file=sys.stderr)
        return {
            "texts": None,
            "annotated_here": 0,
            "seconds": 0.0,
            "texts_per_s": 0.0,
            "output": str(out_path),
            "complete": True,
        }
    if output != "-":
        check_output(out_path, overwrite, inputs=[input] + ([ckpt] if ckpt != BUILTIN else []))
    loaded_here = annotator is None
    annotator = annotator or Annotator.from_checkpoint(ckpt, device, precision, devices, long_texts)
    if ckpt == BUILTIN and loaded_here:
        from eqn.builtin import describe

        print(
            f"model: {describe(annotator.module.builtin or {})} (eqn's built-in annotator; `python -m eqn.annotate "
            "about` prints its card)",
            file=sys.stderr,
        )
    annotator.set_columns(prefix, emotions_column)
    if annotator.asked_precision == "auto":
        print(f"precision=auto: {annotator.precision} ({annotator.precision_reason})", file=sys.stderr)
    if job is not None:
        claim_parts(parts, job)
    started, n, done = time.perf_counter(), 0, 0
    bar = tqdm(desc="annotating", unit="text", disable=not progress, file=sys.stderr)
    try:
        if shards == 1:
            n = done = write_annotated(
                annotator,
                read_chunks(input, text_column, chunk_size, header),
                out_path,
                fmt,
                text_column,
                batch_size,
                str(input),
                bar,
            )
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
    stats = {
        "texts": n,
        "annotated_here": done,
        "seconds": seconds,
        "texts_per_s": done / max(seconds, 1e-9),
        "output": str(out_path),
        "complete": output == "-" or out_path.exists(),
    }
    where = out_path if stats["complete"] else f"{out_path} (waiting for the other shards)"
    stats["longer_than_max"] = annotator.long
    longer = (
        (
            f"; {annotator.long} longer than the model's {annotator.max_length} tokens: "
            + (
                "scored in overlapping windows (max per label)"
                if long_texts == "windows"
                else "cut there (long_texts=windows scores them whole)"
            )
        )
        if annotator.long
        else ""
    )
    print(
        f"annotated {done} texts in {seconds:.1f} s ({stats['texts_per_s']:.0f} texts/s){longer} -> {where}",
        file=sys.stderr,
    )
    return stats


def write_annotated(
    annotator: Annotator, chunks, out_path: Path, fmt: str, text_column: str, batch_size: int, source: str, bar
) -> int:
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


def shard_job(
    ckpt: str,
    input: str,
    chunk_size: int,
    text_column: str,
    header: bool,
    precision: str,
    fmt: str,
    prefix: str,
    emotions_column: str | None,
    long_texts: str = "truncate",
) -> dict:
    """What makes a shard job's chunks: the model's and the input's content, and every option that changes rows."""
    from eqn.hub import resolve_model

    if ckpt == BUILTIN:
        import eqn.builtin as builtin

        model = builtin.FOLDER
        files = [model / builtin.SPEC, model / builtin.WEIGHTS]
    else:
        model = resolve_model(ckpt)
        files = (
            sorted(p for p in model.rglob("*") if p.is_file() and ".eqn" not in p.parts) if model.is_dir() else [model]
        )
    return {
        "model": digest({}, files),
        "input": digest({}, [input]),
        "chunk_size": chunk_size,
        "text_column": text_column,
        "header": header,
        "precision": precision,
        "format": fmt,
        "prefix": prefix,
        "emotions_column": emotions_column,
        **({"long_texts": long_texts} if long_texts != "truncate" else {}),
    }


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
        raise ConfigError(
            f"{parts}: exists but holds no eqn shard job; move it away (eqn uses this folder for the "
            "chunks of shards>1)"
        )
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
        raise ConfigError(
            f"{parts} holds the chunks of another job (different {', '.join(changed)}); finish that "
            f"job, or delete {parts} to start this one"
        )


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
        raise ConfigError(
            f"{err}; {out_path} is not merged yet: rerun this command once that process has "
            "ended, and it merges the shards' chunks"
        ) from None
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
                if writer is not None:
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


USAGE = (
    "usage: python -m eqn.annotate [ckpt=<checkpoint|folder|hub id|builtin>] input=<file|-> output=<file|-> "
    "[text_column=text] [batch_size=64] [chunk_size=20000] [overwrite=true] [precision=fp32|fast|bf16|int8|auto] "
    "[shards=K shard=i] [devices=N] [header=false] [prefix=eqn_] [emotions_column=emotions] "
    "[long_texts=truncate|windows]"
)


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import one_line, parse

    argv = list(argv if argv is not None else sys.argv[1:])
    if argv[:1] == ["about"]:  # the built-in annotator's model card
        import eqn.builtin as builtin

        with one_line("eqn.annotate"):
            builtin.read_spec()
        print((builtin.FOLDER / builtin.CARD).read_text(encoding="utf-8"))
        return
    args = parse(
        argv,
        "eqn.annotate",
        USAGE,
        known=(
            "ckpt",
            "input",
            "output",
            "text_column",
            "batch_size",
            "chunk_size",
            "overwrite",
            "device",
            "progress",
            "header",
            "precision",
            "shards",
            "shard",
            "devices",
            "prefix",
            "emotions_column",
            "long_texts",
        ),
        required=("input", "output"),
        aliases={"trainer.devices": "devices"},
        ints={"batch_size": 1, "chunk_size": 1, "shards": 1, "shard": 0, "devices": 1},
        bools=("overwrite", "progress", "header"),
        doc=__doc__,
    )
    try:
        with one_line("eqn.annotate", path=args["output"]):
            annotate_file(**{"ckpt": None, **args})
    except KeyboardInterrupt:
        print(
            f"eqn.annotate: interrupted; nothing was written to {args['output']} (finished shard chunks are kept: "
            "rerun the same command to resume)",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
