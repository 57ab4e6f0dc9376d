"""Text tables in and out: eqn's one reader of CSV/TSV/JSONL/TXT files (datasets, annotation inputs, ratings), each
row with the line it starts on, and annotation's writers.

Annotation keeps rows exactly: the output holds the input's rows, in its order, with its columns and values
unchanged, then the columns annotation adds. Inputs: .csv (RFC 4180 quoting), .tsv (no quoting: a tab or line break
ends a field, a `"` is an ordinary character), .jsonl (one JSON object per line; keys may differ between rows), .txt
or '-' (stdin): one text per line. Outputs: .csv, .tsv, .jsonl, .parquet, or '-' (stdout, CSV). JSON values that are
not strings are written to CSV/TSV as JSON text; a JSONL row keeps exactly its own keys.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, cast

from eqn.errors import ConfigError, DataError

if TYPE_CHECKING:  # pandas is imported where a frame is made: the data layer reads files without it
    import pandas as pd

csv.field_size_limit(2**31 - 1)  # a field may be as long as a text can be


# ------------------------------------------------------------------------------ reading


def read_text(path: Path) -> str:
    """Read UTF-8 text (BOM stripped; .gz decompressed); a missing file or a non-UTF-8 byte is a DataError with its
    line."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a directory, not a file")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as err:  # permissions, symlink loops, I/O errors
        raise DataError(path, f"cannot be read: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(path, f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})", line) from None


def records(
    handle: Iterable[str], path: Path | str, tsv: bool, strict: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) for each record of CSV (RFC 4180 quoting) or TSV text (no quoting: a tab or line break ends a
    field and `"` is an ordinary character, as in GoEmotions' own files), with the line the record starts on (a
    quoted field may span lines); a blank line is a record of no fields. `strict`: a malformed CSV quote is a
    DataError naming its line."""
    reader = csv.reader(
        handle,
        delimiter="\t" if tsv else ",",
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
        strict=strict and not tsv,
    )
    start = 1
    try:
        for fields in reader:
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(path, f"cannot be read: {err}", reader.line_num) from None


class RaggedRow(str):
    """Marker record for a row whose field count does not match the header."""


def csv_records(path: Path, delimiter: str = ",") -> Iterator[tuple[int, dict[str, str] | RaggedRow]]:
    """A dataset file's records: (line, {column: value}) after the header; blank lines are skipped and a row whose
    field count differs from the header's is a RaggedRow naming the counts."""
    text = read_text(path)
    columns: list[str] | None = None
    for line, fields in records(io.StringIO(text, newline=""), path, tsv=delimiter == "\t"):
        if not fields:
            continue
        if columns is None:
            columns = [c.strip() for c in fields]
            duplicate = sorted({c for c in columns if columns.count(c) > 1})
            if duplicate:
                raise DataError(
                    path,
                    f"duplicate column name(s) {duplicate} in the header (which one is meant is "
                    "not knowable: rename one)",
                    line,
                )
            continue
        if len(fields) != len(columns):
            yield line, RaggedRow(f"has {len(fields)} fields, the header has {len(columns)}")
            continue
        yield line, dict(zip(columns, fields))
    if columns is None:
        raise DataError(path, "file is empty")


def require_columns(path: Path, record: dict, columns: list[str]) -> None:
    missing = [c for c in columns if c not in record]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; the file has {list(record)}", 1)


# ------------------------------------------------------------------------------ annotation inputs

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
        raise ConfigError(
            f"output={output}: unsupported output type {Path(output).suffix!r}; use one of "
            f"{sorted(OUTPUTS)} or '-' (stdout)"
        )
    return fmt


def check_input(source: str) -> None:
    if source == "-":
        return
    path = Path(source)
    if not path.exists():
        raise DataError(
            path,
            "is a link that leads nowhere (a loop or a missing target)"
            if path.is_symlink()
            else "input file not found",
        )
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
            stdin = getattr(sys.stdin, "buffer", None)
            handle = io.TextIOWrapper(stdin, encoding="utf-8-sig", newline="\n") if stdin is not None else sys.stdin
            yield from _lines(handle, text_column, chunk_size)
            return
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".txt":
            with open(path, encoding="utf-8-sig", newline="\n") as handle:
                yield from _lines(handle, text_column, chunk_size)
        elif suffix in (".jsonl", ".json"):
            yield from _jsonl(path, text_column, chunk_size)
        else:
            yield from _delimited(path, suffix == ".tsv", text_column, chunk_size, header)
    except UnicodeDecodeError as err:
        if source == "-":
            raise DataError("stdin", f"is not UTF-8 text ({err.reason})") from None
        offset, line = first_bad_byte(Path(source))
        raise DataError(source, f"is not UTF-8 text ({err.reason}: byte at offset {offset})", line) from None
    except OSError as err:
        raise DataError(source, f"cannot be read ({err.strerror})") from None


def first_bad_byte(path: Path) -> tuple[int | None, int | None]:
    """The file offset and line of the first byte that is not UTF-8 (a decoder's own offset counts from the start
    of the block it was reading, not of the file)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        for block in [*iter(lambda: handle.read(1 << 16), b""), None]:
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous block
            try:
                decoder.decode(block or b"", final=block is None)
            except UnicodeDecodeError as err:
                start = offset - pending + err.start
                with open(path, "rb") as again:
                    return start, again.read(start).count(b"\n") + 1
            offset += len(block or b"")
    return None, None


def _lines(handle: IO[str], text_column: str, chunk_size: int) -> Iterator[Chunk]:
    """One text per line, every line (an empty line is an empty text); only the line break (\\n or \\r\\n) is
    removed: a lone carriage return is part of the text."""
    import pandas as pd

    texts: list[str] = []
    first = 1
    for line in handle:
        texts.append(line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line)
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
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in columns})
    return Chunk(frame, lines, [tuple(r) for r in rows])


def _delimited(path: Path, tsv: bool, text_column: str, chunk_size: int, header: bool) -> Iterator[Chunk]:
    """Every record is a row: a blank line is a row with one empty field (an empty text when the file has one
    column); a row with more or fewer fields than the first is refused, naming its line."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = records(handle, path, tsv, strict=True)
        _, first_row = next(reader, (1, None))
        if first_row is None:
            raise DataError(path, "input is empty")
        if header:
            duplicate = sorted({c for c in first_row if first_row.count(c) > 1})
            if duplicate:
                raise DataError(path, f"duplicate column name(s) {duplicate} in the header", 1)
            if text_column not in first_row:
                raise DataError(path, f"no column {text_column!r}; the input has {first_row} (set text_column=...)", 1)
        elif not tsv and len(first_row) > 1:
            raise DataError(
                path,
                f"has {len(first_row)} comma-separated fields; with header=false a CSV row must "
                "be one field, the text (quote texts that contain commas, give the file a header "
                "and text_column=..., or use a .txt file: one text per line)",
                1,
            )
        names = first_row if header else [text_column, *(f"column_{i}" for i in range(1, len(first_row)))]
        rows: list[list[str]] = [] if header else [first_row or [""]]
        lines: list[int] = [] if header else [1]
        for start, fields in reader:
            fields = fields or [""]  # a blank line
            if len(fields) != len(names):
                raise DataError(
                    path,
                    f"row has {len(fields)} field{'s' * (len(fields) != 1)}, the "
                    f"{'header' if header else 'first row'} {len(names)}",
                    start,
                )
            rows.append(fields)
            lines.append(start)
            if len(rows) == chunk_size:
                yield _table_chunk(rows, lines, names)
                rows, lines = [], []
    if rows:
        yield _table_chunk(rows, lines, names)


def _table_chunk(rows: list[list[str]], lines: list[int], names: list[str]) -> Chunk:
    import pandas as pd

    columns = list(zip(*rows))
    frame = pd.DataFrame({i: pd.Series(c, dtype=object) for i, c in enumerate(columns)})
    frame.columns = names  # the header exactly as written
    return Chunk(frame, lines)


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

    def __init__(self, target: Path | IO[str], fmt: str, input_columns: int, name: str | None = None):
        self.fmt, self.input_columns = fmt, input_columns
        self.parquet: Any = None  # a pyarrow ParquetWriter, opened with the first chunk
        self.own = not hasattr(target, "write")  # a path: this writer opens and closes it
        self.name = name or (str(target) if self.own else "output")  # for errors: never a temp
        self.handle: IO[str] | None = (
            None
            if fmt == "parquet"
            else open(cast(Path, target), "w", encoding="utf-8", newline="")
            if self.own
            else cast("IO[str]", target)
        )
        self.path, self.first = target, True

    def write(self, frame: pd.DataFrame, chunk: Chunk) -> None:
        if self.fmt == "parquet":
            self._parquet(frame)
        elif self.fmt == "jsonl":  # each row keeps its own keys; missing values are null
            added = list(frame.columns[self.input_columns :])
            for i, record in enumerate(frame.to_dict(orient="records")):
                keys = chunk.keys[i] if chunk.keys is not None else frame.columns[: self.input_columns]
                row = {k: _json_value(record[k]) for k in [*keys, *added]}
                cast("IO[str]", self.handle).write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        else:
            given = frame.iloc[:, : self.input_columns].map(_json_text)
            if self.fmt == "tsv":
                bad = given.apply(lambda col: col.str.contains(r"[\t\r\n]", regex=True, na=False)).any(axis=1)
                if bad.any():
                    raise DataError(
                        self.name,
                        "a value holds a tab or line break, which "
                        "TSV cannot carry; choose .csv, .jsonl or .parquet output",
                        chunk.lines[int(bad.to_numpy().argmax())],
                    )
            import pandas as pd

            out = pd.concat([given, frame.iloc[:, self.input_columns :]], axis=1)
            if self.fmt == "tsv":
                out.to_csv(
                    self.handle, sep="\t", index=False, header=self.first, quoting=csv.QUOTE_NONE, lineterminator="\n"
                )
            else:
                write_csv(out, cast("IO[str]", self.handle), header=self.first)
        self.first = False

    def _parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(str(self.path), table.schema)
            schema = self.parquet.schema
            for got, want in zip(table.schema, schema):  # a cast would change values (0 -> "0"): refused
                if got.type != want.type and not pa.types.is_null(got.type):
                    raise pa.ArrowInvalid(
                        f"column {got.name!r} holds {got.type} values in a later chunk, {want.type} before"
                    )
            self.parquet.write_table(table.cast(schema))  # only all-missing columns are cast
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as err:
            raise DataError(
                self.name,
                "Parquet needs one type per column, and the input's values do not have one "
                f"({' '.join(str(err).split())[:160]}); choose .jsonl or .csv output",
            ) from None

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None and self.own:
            self.handle.close()
        elif self.handle is not None:
            self.handle.flush()


def write_csv(frame: pd.DataFrame, handle: IO[str], header: bool = True, float_format: str | None = None) -> None:
    """RFC 4180 CSV, "\\n" line ends: a field holding a comma, quote, line feed *or carriage return* is quoted (the
    csv module quotes only the line terminator's characters, so a lone "\\r" went out bare and split the row on
    reading)."""
    text = frame.select_dtypes(include="object")
    bare_cr = any(text[c].map(lambda v: isinstance(v, str) and "\r" in v).any() for c in text.columns) or (
        header and any("\r" in str(c) for c in frame.columns)
    )
    if not bare_cr:
        frame.to_csv(handle, index=False, header=header, float_format=float_format, lineterminator="\n")
        return
    buffer = io.StringIO()
    frame.to_csv(
        buffer, index=False, header=header, float_format=float_format, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL
    )  # with "\r\n" as terminator both characters force quotes...
    for fields in csv.reader(io.StringIO(buffer.getvalue(), newline="")):
        # ...then each record is written again with "\n", its fields quoted where they held a "\r"
        handle.write(('""' if fields == [""] else ",".join(_quoted(f) for f in fields)) + "\n")


def _quoted(field: str) -> str:
    if not any(c in field for c in ',"\r\n'):
        return field
    return '"' + field.replace('"', '""') + '"'


def _json_value(value):
    if isinstance(value, float) and value != value:
        return None
    return value
