"""Text tables in and out of annotation, row for row: the output holds exactly the input's rows, in its order, with
its columns and values unchanged, then the columns annotation adds.

Inputs: .csv (RFC 4180 quoting), .tsv (no quoting: a tab or line break ends a field, a `"` is an ordinary
character), .jsonl (one JSON object per line; keys may differ between rows), .txt or '-' (stdin): one text per line.
Outputs: .csv, .tsv, .jsonl, .parquet, or '-' (stdout, CSV). JSON values that are not strings are written to CSV/TSV
as JSON text; a JSONL row keeps exactly its own keys.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import pandas as pd

from eqn.io import ConfigError, DataError

INPUTS = (".csv", ".tsv", ".jsonl", ".json", ".txt")
OUTPUTS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass
class Chunk:
    frame: pd.DataFrame
    lines: list[int]  # the input line of each row (for errors)
    keys: list[tuple] | None = None  # JSONL: the keys each row had


def output_format(output: str) -> str:
    if output == "-":
        return "csv"
    fmt = OUTPUTS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(f"output={output}: unsupported output type {Path(output).suffix!r}; use one of "
                          f"{sorted(OUTPUTS)} or '-' (stdout)")
    return fmt


def check_input(source: str) -> None:
    if source == "-":
        return
    path = Path(source)
    if not path.exists():
        raise DataError(path, "input file not found")
    if path.is_dir():
        raise DataError(path, "input is a directory, not a file")
    if path.suffix.lower() not in INPUTS:
        raise DataError(path, f"unsupported input type {path.suffix.lower()!r}: use .csv, .tsv, .jsonl, .txt or '-'")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror})") from None


def read_chunks(source: str, text_column: str, chunk_size: int, header: bool = True) -> Iterator[Chunk]:
    check_input(source)
    try:
        if source == "-":
            yield from _lines(sys.stdin, text_column, chunk_size)
            return
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".txt":
            with open(path, encoding="utf-8-sig", newline="") as handle:
                yield from _lines(handle, text_column, chunk_size)
        elif suffix in (".jsonl", ".json"):
            yield from _jsonl(path, text_column, chunk_size)
        else:
            yield from _delimited(path, suffix == ".tsv", text_column, chunk_size, header)
    except UnicodeDecodeError as err:
        raise DataError(source, f"is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(source, f"cannot be read ({err.strerror})") from None


def _lines(handle: IO[str], text_column: str, chunk_size: int) -> Iterator[Chunk]:
    """One text per line, every line (an empty line is an empty text); only the line break is removed."""
    texts: list[str] = []
    first = 1
    for line in handle:
        texts.append(line[:-2] if line.endswith("\r\n") else line.rstrip("\n"))
        if len(texts) == chunk_size:
            yield Chunk(pd.DataFrame({text_column: texts}, dtype=object), list(range(first, first + len(texts))))
            first, texts = first + len(texts), []
    if texts:
        yield Chunk(pd.DataFrame({text_column: texts}, dtype=object), list(range(first, first + len(texts))))


def _jsonl(path: Path, text_column: str, chunk_size: int) -> Iterator[Chunk]:
    columns: dict[str, None] = {}  # every key of the file, in first-seen order (a first pass validates each line)
    with open(path, encoding="utf-8-sig") as handle:
        for n, line in enumerate(handle, 1):
            if line.strip():
                columns.update(dict.fromkeys(_record(path, line, n)))
    if text_column not in columns:
        raise DataError(path, f"no key {text_column!r} in any row; the rows have {list(columns)} (set text_column=...)")
    rows: list[dict] = []
    lines: list[int] = []
    with open(path, encoding="utf-8-sig") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            rows.append(json.loads(line))
            lines.append(n)
            if len(rows) == chunk_size:
                yield _json_chunk(rows, lines, list(columns))
                rows, lines = [], []
    if rows:
        yield _json_chunk(rows, lines, list(columns))


def _record(path: Path, line: str, n: int) -> dict:
    try:
        record = json.loads(line)
    except ValueError as err:
        raise DataError(path, f"invalid JSON ({getattr(err, 'msg', err)})", n) from None
    if not isinstance(record, dict):
        raise DataError(path, f"a JSONL row must be an object, got {type(record).__name__}", n)
    return record


def _json_chunk(rows: list[dict], lines: list[int], columns: list[str]) -> Chunk:
    frame = pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in columns})
    return Chunk(frame, lines, [tuple(r) for r in rows])


def _delimited(path: Path, tsv: bool, text_column: str, chunk_size: int, header: bool) -> Iterator[Chunk]:
    sep, quoting = ("\t", csv.QUOTE_NONE) if tsv else (",", csv.QUOTE_MINIMAL)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first_row = next(csv.reader(handle, delimiter=sep, quoting=quoting), None)
    if first_row is None:
        raise DataError(path, "input is empty")
    if header:
        duplicate = sorted({c for c in first_row if first_row.count(c) > 1})
        if duplicate:
            raise DataError(path, f"duplicate column name(s) {duplicate} in the header", 1)
        if text_column not in first_row:
            raise DataError(path, f"no column {text_column!r}; the input has {first_row} (set text_column=...)", 1)
    elif not tsv and len(first_row) > 1:
        raise DataError(path, f"has {len(first_row)} comma-separated fields; with header=false a CSV row must be one "
                              "field, the text (quote texts that contain commas, give the file a header and "
                              "text_column=..., or use a .txt file: one text per line)", 1)
    names = first_row if header else [text_column, *(f"column_{i}" for i in range(1, len(first_row)))]
    try:
        reader = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, chunksize=chunk_size,
                             encoding="utf-8-sig", header=0 if header else None, quoting=quoting)
        line = 2 if header else 1
        for frame in reader:
            if frame.shape[1] != len(names):
                raise DataError(path, f"rows have {frame.shape[1]} fields, the first row {len(names)}", line)
            frame.columns = names  # the header exactly as written (pandas renames empty and repeated names)
            yield Chunk(frame.astype(object), list(range(line, line + len(frame))))
            line += len(frame)
    except pd.errors.EmptyDataError:
        raise DataError(path, "input is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(path, f"cannot be read: {' '.join(str(err).split())}") from None


# ------------------------------------------------------------------------------ writing


def _json_text(value):
    """A value from a JSONL row as CSV/TSV text: strings as they are, anything else as JSON (missing: empty)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:  # a missing CSV field
        return None
    return json.dumps(value, ensure_ascii=False)


class ChunkWriter:
    """Writes annotated chunks as they come (memory does not grow with the input): CSV, TSV, JSONL or Parquet."""

    def __init__(self, target: Path | IO[str], fmt: str, input_columns: int):
        self.fmt, self.parquet, self.input_columns = fmt, None, input_columns
        self.own = not hasattr(target, "write")
        self.handle = None if fmt == "parquet" else (
            open(target, "w", encoding="utf-8", newline="") if self.own else target)
        self.path, self.first = target, True

    def write(self, frame: pd.DataFrame, chunk: Chunk) -> None:
        if self.fmt == "parquet":
            self._parquet(frame)
        elif self.fmt == "jsonl":  # each row keeps its own keys; missing values are null
            added = list(frame.columns[self.input_columns:])
            for i, record in enumerate(frame.to_dict(orient="records")):
                keys = chunk.keys[i] if chunk.keys is not None else frame.columns[:self.input_columns]
                row = {k: _json_value(record[k]) for k in [*keys, *added]}
                self.handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        else:
            given = frame.iloc[:, :self.input_columns].map(_json_text)
            if self.fmt == "tsv":
                bad = given.apply(lambda col: col.str.contains(r"[\t\r\n]", regex=True, na=False)).any(axis=1)
                if bad.any():
                    raise DataError(self.path if self.own else "output", "a value holds a tab or line break, which "
                                    "TSV cannot carry; choose .csv, .jsonl or .parquet output", chunk.lines[int(
                                        bad.to_numpy().argmax())])
            out = pd.concat([given, frame.iloc[:, self.input_columns:]], axis=1)
            out.to_csv(self.handle, sep="\t" if self.fmt == "tsv" else ",", index=False, header=self.first,
                       quoting=csv.QUOTE_NONE if self.fmt == "tsv" else csv.QUOTE_MINIMAL, lineterminator="\n")
        self.first = False

    def _parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(str(self.path), table.schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise DataError(self.path, "Parquet needs one type per column, and the input's values do not have one "
                            f"({' '.join(str(err).split())[:160]}); choose .jsonl or .csv output") from None

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None and self.own:
            self.handle.close()
        elif self.handle is not None:
            self.handle.flush()


def _json_value(value):
    if isinstance(value, float) and value != value:
        return None
    return value
