"""One small reader per dataset (and `custom`): original files -> texts, label ids, label names, splits.

Every reader reports bad input as a DataError naming the file, the line and the problem. With
`on_bad_rows="skip"` a bad row is dropped and counted instead (LabelledData.skipped_rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from eqn.errors import ConfigError, DataError
from eqn.hub import hub_reachable, offline_flag
from eqn.tables import RaggedRow, csv_records, read_text, require_columns

log = logging.getLogger(__name__)


@dataclass
class Split:
    ids: list[str]
    texts: list[str]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Iterable[int]) -> "Split":
        index = list(index)
        return Split([self.ids[i] for i in index], [self.texts[i] for i in index], [self.labels[i] for i in index])


@dataclass
class LabelledData:
    name: str
    label_names: list[str]
    multi_label: bool
    splits: dict[str, Split]
    files: list[Path] = field(default_factory=list)
    skipped_rows: int = 0


@dataclass
class Row:
    line: int
    id: str | None
    text: object
    label: object


class RowChecker:
    """Validates rows of one file and applies the bad-row policy."""

    def __init__(
        self, path: Path, label_names: list[str] | None, on_bad_rows: str, drop_empty_text: bool, label_sep: str | None
    ):
        self.path, self.names, self.policy, self.drop_empty, self.sep = (
            path,
            label_names,
            on_bad_rows,
            drop_empty_text,
            label_sep,
        )
        self.skipped = 0
        self.index = {n: i for i, n in reversed(list(enumerate(label_names or [])))}  # a name's first position

    def bad(self, line: int, problem: str) -> None:
        if self.policy == "skip":
            self.skipped += 1
            log.warning("skipping %s line %d: %s", self.path, line, problem)
            return
        raise DataError(self.path, problem + " (set data.on_bad_rows=skip to drop such rows)", line)

    def label_ids(self, row: Row) -> list[int]:
        tokens = label_tokens(row.label, self.sep)
        if not tokens:
            raise ValueError("missing label")
        return sorted({self.label_id(tok) for tok in tokens})

    def label_id(self, name: str) -> int:
        assert self.names is not None
        if name in self.index:
            return self.index[name]
        try:
            idx = int(name)
        except ValueError:
            raise ValueError(f"label {name!r} is not in the label set {self.names}") from None
        if not 0 <= idx < len(self.names):
            raise ValueError(f"label id {idx} is out of range 0..{len(self.names) - 1}")
        return idx

    def collect(self, rows: Iterable[Row]) -> Split:
        ids: list = []
        texts: list[str] = []
        labels: list[list[int]] = []
        seen: dict[str, int] = {}
        for row in rows:
            text = row.text
            if not isinstance(text, str) or (isinstance(text, float) and math.isnan(text)):
                self.bad(row.line, f"text is missing or not a string ({text!r})")
                continue
            if not text.strip():
                if self.drop_empty:
                    self.skipped += 1
                    log.info("dropping empty text at %s line %d", self.path, row.line)
                else:
                    self.bad(row.line, "text is empty or whitespace only")
                continue
            try:
                label = self.label_ids(row)
            except (ValueError, json.JSONDecodeError) as err:
                self.bad(row.line, str(err))
                continue
            rid = row.id if row.id not in (None, "") else str(row.line)
            if row.id not in (None, "") and rid in seen:
                self.bad(row.line, f"duplicate id {rid!r} (first seen on line {seen[rid]})")
                continue
            seen[rid] = row.line
            ids.append(rid)
            texts.append(text)
            labels.append(label)
        if not texts:
            raise DataError(self.path, "no usable rows (the file is empty or has a header only)")
        return Split(ids, texts, labels)


def default_data_dir() -> str:
    """EQN_DATA_DIR, else ../shared/data beside the project if it exists, else data/."""
    if os.environ.get("EQN_DATA_DIR"):
        return os.environ["EQN_DATA_DIR"]
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        shared = root.parent / "shared" / "data"
        if shared.is_dir():
            return str(shared.resolve())
    return str(Path.cwd() / "data")


def carve(split: Split, fraction: float, seed: int, stratify: bool = True) -> tuple[Split, Split]:
    """Split off a seeded (stratified by first label) fraction: (rest, carved)."""
    rng = np.random.default_rng(seed)
    keys = [ids[0] for ids in split.labels] if stratify else [0] * len(split)
    carved: list[int] = []
    for key in sorted(set(keys)):
        members = np.array([i for i, k in enumerate(keys) if k == key])
        rng.shuffle(members)
        carved.extend(members[: int(round(len(members) * fraction))].tolist())
    chosen = set(carved)
    rest = [i for i in range(len(split)) if i not in chosen]
    return split.subset(rest), split.subset(sorted(chosen))


# --------------------------------------------------------------------------- readers


def missing_files_error(folder: Path, files: list[str], hub_id: str | None, how: str = "") -> DataError:
    flag = offline_flag()
    reason = f"{flag}=1 is set in the environment" if flag else "huggingface.co could not be reached"
    hint = (
        f"; the Hugging Face fallback '{hub_id}' was not tried ({reason}); with internet, "
        f"`python -m eqn.data download {folder.name}` fetches it"
        if hub_id
        else ""
    )
    return DataError(
        folder, f"dataset files not found: expected {', '.join(files)} in this folder{hint}. {how}".strip()
    )


def load_from_hub(hub_id: str, config: str | None, folder: Path, files: list[str], to_rows: Callable):
    """A dataset from the hub (when reachable), turned into eqn's splits by `to_rows`."""
    if not hub_reachable():
        raise missing_files_error(
            folder, files, hub_id, "Set paths.data_dir (or EQN_DATA_DIR) to the folder that holds them."
        )
    import datasets

    log.info("local files missing in %s; loading %s from the Hugging Face hub", folder, hub_id)
    return to_rows(datasets.load_dataset(hub_id, config))


# The embedded copy (eqn/datasets/goemotions, CC BY 4.0): rows and SHA-256 of each uncompressed file.
GOEMOTIONS_FILES = {
    "train.tsv": (43410, "1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5"),
    "dev.tsv": (5426, "575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62"),
    "test.tsv": (5427, "0587b2dd8b27b97352adbfc3fb083d46005c8946657fdc2b1ca8b1cc7f1f8be4"),
}


def embedded_goemotions() -> Path:
    """The folder of the GoEmotions copy shipped inside the package (found through importlib.resources)."""
    from importlib.resources import files

    return Path(str(files("eqn.datasets") / "goemotions"))


def verify_embedded(folder: Path) -> None:
    for name, (rows, digest) in GOEMOTIONS_FILES.items():
        text = read_text(folder / f"{name}.gz")
        got = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if got != digest or text.count("\n") != rows:
            raise DataError(
                folder / f"{name}.gz",
                f"the embedded GoEmotions file is damaged ({text.count(chr(10))} "
                f"rows, sha256 {got[:12]}; expected {rows} rows, {digest[:12]})",
            )


def goemotions(data_dir: Path, on_bad_rows: str = "error", drop_empty_text: bool = False, **_) -> LabelledData:
    """GoEmotions from the data dir if its files are there, else the embedded copy, else the hub."""
    folder = Path(data_dir) / "goemotions"
    files = ["train.tsv", "dev.tsv", "test.tsv", "labels.txt"]
    if not all((folder / f).exists() for f in files) and (embedded_goemotions() / "labels.txt").exists():
        folder = embedded_goemotions()
        verify_embedded(folder)
        files = ["train.tsv.gz", "dev.tsv.gz", "test.tsv.gz", "labels.txt"]
        log.info("GoEmotions: using the copy embedded in the package (%s)", folder)
    if not all((folder / f).exists() for f in files):
        ds = load_from_hub("google-research-datasets/go_emotions", "simplified", folder, files, lambda d: d)
        names = ds["train"].features["labels"].feature.names
        splits = {
            s: Split(list(ds[h]["id"]), list(ds[h]["text"]), [sorted(x) for x in ds[h]["labels"]])
            for s, h in [("train", "train"), ("val", "validation"), ("test", "test")]
        }
        return LabelledData("goemotions", names, True, splits)
    names = [n.strip() for n in read_text(folder / "labels.txt").splitlines() if n.strip()]
    splits, skipped = {}, 0
    for split, fname in [("train", files[0]), ("val", files[1]), ("test", files[2])]:
        path = folder / fname
        checker = RowChecker(path, names, on_bad_rows, drop_empty_text, ",")

        def rows(path=path, checker=checker):
            for line, fields in enumerate(read_text(path).split("\n"), start=1):
                if not fields:
                    continue
                parts = fields.rstrip("\r").split("\t")
                if len(parts) != 3:
                    checker.bad(line, f"expected 3 tab-separated fields (text, label ids, id), found {len(parts)}")
                    continue
                yield Row(line, parts[2], parts[0], parts[1])

        splits[split] = checker.collect(rows())
        skipped += checker.skipped
    return LabelledData("goemotions", names, True, splits, [folder / f for f in files], skipped)


EMOTION6_LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def emotion6(data_dir: Path, on_bad_rows: str = "error", drop_empty_text: bool = False, **_) -> LabelledData:
    folder = Path(data_dir) / "emotion6"
    files = ["train.txt", "val.txt", "test.txt"]
    if not all((folder / f).exists() for f in files):
        ds = load_from_hub("dair-ai/emotion", "split", folder, files, lambda d: d)
        splits = {
            s: Split([str(i) for i in range(len(ds[h]))], list(ds[h]["text"]), [[x] for x in ds[h]["label"]])
            for s, h in [("train", "train"), ("val", "validation"), ("test", "test")]
        }
        return LabelledData("emotion6", EMOTION6_LABELS, False, splits)
    splits, skipped = {}, 0
    for split, fname in zip(["train", "val", "test"], files):
        path = folder / fname
        checker = RowChecker(path, EMOTION6_LABELS, on_bad_rows, drop_empty_text, None)

        def rows(path=path, checker=checker):
            for line, content in enumerate(read_text(path).split("\n"), start=1):
                if not content.strip():
                    continue
                text, sep, label = content.rstrip("\r").rpartition(";")
                if not sep:
                    checker.bad(line, "expected 'text;label'")
                    continue
                yield Row(line, None, text, label)

        splits[split] = checker.collect(rows())
        skipped += checker.skipped
    return LabelledData("emotion6", EMOTION6_LABELS, False, splits, [folder / f for f in files], skipped)


def csv_split(
    path: Path, checker: RowChecker, text_col: str, label_col: str, id_col: str | None, delimiter: str = ","
) -> Split:
    def rows():
        first = True
        for line, rec in csv_records(path, delimiter):
            if isinstance(rec, RaggedRow):
                checker.bad(line, f"ragged row: {rec}")
                continue
            if first:
                require_columns(path, rec, [text_col, label_col] + ([id_col] if id_col is not None else []))
                first = False
            yield Row(line, rec.get(id_col) if id_col is not None else None, rec[text_col], rec[label_col])

    return checker.collect(rows())


def with_carved_val(
    name: str, labels: list[str], raw: dict[str, Split], fraction: float, seed: int, files: list, skipped: int
) -> LabelledData:
    """A single-label dataset published as train and test: validation is a seeded, stratified part of train."""
    train, val = carve(raw["train"], fraction, seed)
    return LabelledData(name, labels, False, {"train": train, "val": val, "test": raw["test"]}, files, skipped)


TFN3_LABELS = ["Bearish", "Bullish", "Neutral"]


def tfn3(data_dir: Path, on_bad_rows: str = "error", val_fraction: float = 0.1, seed: int = 42, **_) -> LabelledData:
    folder = Path(data_dir) / "tfn3"
    files = ["sent_train.csv", "sent_valid.csv"]
    if not all((folder / f).exists() for f in files):
        ds = load_from_hub("zeroshot/twitter-financial-news-sentiment", None, folder, files, lambda d: d)
        raw = {
            s: Split([str(i) for i in range(len(ds[h]))], list(ds[h]["text"]), [[x] for x in ds[h]["label"]])
            for s, h in [("train", "train"), ("test", "validation")]
        }
        skipped = 0
    else:
        raw, skipped = {}, 0
        for split, fname in [("train", files[0]), ("test", files[1])]:
            checker = RowChecker(folder / fname, TFN3_LABELS, on_bad_rows, False, None)
            raw[split] = csv_split(folder / fname, checker, "text", "label", None)
            skipped += checker.skipped
    return with_carved_val("tfn3", TFN3_LABELS, raw, val_fraction, seed, [folder / f for f in files], skipped)


TSA3_LABELS = ["negative", "neutral", "positive"]


def tsa3(
    data_dir: Path,
    on_bad_rows: str = "error",
    val_fraction: float = 0.1,
    seed: int = 42,
    drop_empty_text: bool = True,
    **_,
) -> LabelledData:
    folder = Path(data_dir) / "tsa3"
    files = ["train.csv", "test.csv"]
    if not all((folder / f).exists() for f in files):
        raise missing_files_error(
            folder, files, None, "Download Kaggle 'tweet-sentiment-extraction' (train.csv, test.csv)."
        )
    raw, skipped = {}, 0
    for split, fname in [("train", files[0]), ("test", files[1])]:
        checker = RowChecker(folder / fname, TSA3_LABELS, on_bad_rows, drop_empty_text, None)
        raw[split] = csv_split(folder / fname, checker, "text", "sentiment", "textID")
        skipped += checker.skipped
    return with_carved_val("tsa3", TSA3_LABELS, raw, val_fraction, seed, [folder / f for f in files], skipped)


HEALTH7_LABELS = ["Normal", "Depression", "Suicidal", "Anxiety", "Stress", "Bipolar", "Personality disorder"]


def health7(
    data_dir: Path,
    on_bad_rows: str = "error",
    seed: int = 42,
    drop_empty_text: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    **_,
) -> LabelledData:
    folder = Path(data_dir) / "health7"
    path = folder / "Combined Data.csv"
    if not path.exists():
        raise missing_files_error(
            folder,
            ["'Combined Data.csv'"],
            None,
            "Get it from Kaggle: `kaggle datasets download -d suchintikasarkar/sentiment-analysis-for-mental-health`, "
            "unzip, and put 'Combined Data.csv' in that folder.",
        )
    checker = RowChecker(path, HEALTH7_LABELS, on_bad_rows, drop_empty_text, None)
    full = csv_split(path, checker, "statement", "status", "")
    rest, test = carve(full, test_fraction, seed)
    train, val = carve(rest, val_fraction / (1 - test_fraction), seed + 1)
    return LabelledData(
        "health7", HEALTH7_LABELS, False, {"train": train, "val": val, "test": test}, [path], checker.skipped
    )


# --------------------------------------------------------------------------- custom


def custom_rows(path: Path, text_col: str, label_col: str, id_col: str | None, on_bad) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        first = True
        for line, content in enumerate(read_text(path).split("\n"), start=1):
            if not content.strip():
                continue
            try:
                rec = json.loads(content)
            except json.JSONDecodeError as err:
                on_bad(line, f"not valid JSON ({err.msg})")
                continue
            if not isinstance(rec, dict):
                on_bad(line, "a JSONL line must be a JSON object")
                continue
            if first:
                require_columns(path, rec, [text_col, label_col])
                first = False
            yield Row(line, rec.get(id_col) if id_col else None, rec.get(text_col), rec.get(label_col))
        return
    if suffix not in (".csv", ".tsv", ".txt"):
        raise DataError(path, f"unsupported file type {suffix!r}: use .csv, .tsv or .jsonl")
    first = True
    for line, rec in csv_records(path, "\t" if suffix == ".tsv" else ","):
        if isinstance(rec, RaggedRow):
            on_bad(line, f"ragged row: {rec}")
            continue
        if first:
            require_columns(path, rec, [text_col, label_col] + ([id_col] if id_col else []))
            first = False
        yield Row(line, rec.get(id_col) if id_col else None, rec[text_col], rec[label_col])


def custom(
    data_dir: Path,
    path: str | None = None,
    train_path: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    label_separator: str | None = None,
    labels: list[str] | None = None,
    multi_label: bool | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    on_bad_rows: str = "error",
    drop_empty_text: bool = False,
    **_,
) -> LabelledData:
    given = {"train": train_path or path, "val": val_path, "test": test_path}
    if not given["train"]:
        raise DataError("data.path", "custom data needs data.path (or data.train_path)")
    paths = {
        s: Path(p).expanduser() if Path(p).expanduser().is_absolute() else Path(data_dir) / p
        for s, p in given.items()
        if p
    }
    paths = {s: (p if p.exists() else Path(str(given[s])).expanduser().absolute()) for s, p in paths.items()}
    # First pass: raw rows, to find the label set (union over splits).
    raw: dict[str, list[Row]] = {}
    skipped = 0
    for split, p in paths.items():
        probe = RowChecker(p, None, on_bad_rows, drop_empty_text, label_separator)
        raw[split] = list(custom_rows(p, text_column, label_column, id_column, probe.bad))
        skipped += probe.skipped  # unreadable rows (bad JSON, ragged)
    if labels:
        check_label_names(list(labels), "data.labels")
    names = list(labels) if labels else _label_union(raw, label_separator, paths)
    splits, seen_multi = {}, False
    for split, rows in raw.items():
        checker = RowChecker(paths[split], names, on_bad_rows, drop_empty_text, label_separator)
        splits[split] = checker.collect(rows)
        skipped += checker.skipped
        seen_multi |= any(len(x) > 1 for x in splits[split].labels)
    is_multi = seen_multi if multi_label is None else bool(multi_label)
    if "test" not in splits:
        splits["train"], splits["test"] = carve(splits["train"], test_fraction, seed, stratify=not is_multi)
    if "val" not in splits:
        splits["train"], splits["val"] = carve(splits["train"], val_fraction, seed + 1, stratify=not is_multi)
    name = Path(given["train"]).stem
    return LabelledData(f"custom:{name}", names, is_multi, splits, list(paths.values()), skipped)


def check_label_names(names: list, where: str) -> None:
    """Label names become column names: each must be a non-empty string, and no two alike."""
    empty = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if empty:
        raise ConfigError(f"{where}: label {empty[0] + 1} of {len(names)} is empty; every label needs a name")
    duplicate = sorted({n for n in names if names.count(n) > 1})
    if duplicate:
        raise ConfigError(f"{where}: duplicate label name(s) {duplicate}; every label needs its own name")


def label_tokens(raw: object, sep: str | None) -> list[str]:
    """The label names or ids of one row: a string (split on `sep`), an integer, or a JSON list of them.
    Floats, booleans and objects are refused (ValueError) rather than turned into new classes."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return []
    if isinstance(raw, str) and raw.strip().startswith("["):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"label {raw!r} is not a valid JSON list ({err.msg})") from None
    items = raw if isinstance(raw, list) else [raw]
    tokens = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ValueError(
                f"label {item!r} is a {type(item).__name__}: labels must be names (strings) or integer ids"
            )
        parts = item.split(sep) if isinstance(item, str) and sep is not None and not isinstance(raw, list) else [item]
        tokens += [str(t).strip() for t in parts if str(t).strip()]
    return tokens


def _label_union(raw: dict[str, list[Row]], sep: str | None, paths: dict[str, Path]) -> list[str]:
    def tokens(split: str, row: Row) -> list[str]:
        try:
            return label_tokens(row.label, sep)
        except ValueError as err:
            raise DataError(paths[split], str(err), row.line) from None

    train = {t for r in raw["train"] for t in tokens("train", r)}
    for split in ("val", "test"):
        for r in raw.get(split, []):
            for t in tokens(split, r):
                if t not in train:
                    raise DataError(
                        paths[split],
                        f"label {t!r} does not occur in the training split; "
                        "list every label in data.labels to allow it",
                        r.line,
                    )
    if train and all(t.isdigit() for t in train):
        ids = sorted(int(t) for t in train)
        unseen = sorted(set(range(ids[-1] + 1)) - set(ids))
        if unseen:
            log.warning(
                "%s: label ids %s never occur in the training split; they are kept as classes without "
                "examples (set data.labels to name the classes)",
                paths["train"],
                unseen,
            )
        return [str(i) for i in range(ids[-1] + 1)]
    return sorted(train)


READERS: dict[str, Callable[..., LabelledData]] = {
    "goemotions": goemotions,
    "emotion6": emotion6,
    "tfn3": tfn3,
    "tsa3": tsa3,
    "health7": health7,
    "custom": custom,
}


# Datasets read in this process (a sweep's worker, a test session), the last KEEP of them; a dataset with a file of
# 64 MiB or more is kept alone. The shipped ones take a few MB each in memory.
_parsed: OrderedDict[str, tuple[list, LabelledData]] = OrderedDict()
KEEP = 4


def load(name: str, data_dir: str | Path, **options) -> LabelledData:
    """Read a dataset. A dataset read before in this process is served from memory while its files are unchanged,
    as a copy whose split table may be edited."""
    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(READERS)}")
    key = json.dumps([name, str(Path(data_dir).resolve()), options], sort_keys=True, default=str)
    hit = _parsed.get(key)
    if hit is not None and hit[0] == _stamps(hit[1].files):
        data = hit[1]
        _parsed.move_to_end(key)
    else:
        data = READERS[name](Path(data_dir), **options)
        if data.files:  # hub-only data has no files to watch: not kept
            _parsed[key] = (_stamps(data.files), data)
            _parsed.move_to_end(key)
            while len(_parsed) > (1 if any(c is None for st, _ in _parsed.values() for *_, c in st) else KEEP):
                _parsed.popitem(last=False)
    return dataclasses.replace(data, splits=dict(data.splits), files=list(data.files))


def _stamps(files: list) -> list:
    """What a file is now: size, modification time and (below 64 MiB, i.e. every shipped dataset) a content hash."""
    out: list[tuple] = []
    for f in files:
        try:
            st = Path(f).stat()
            content = hashlib.sha1(Path(f).read_bytes()).hexdigest() if st.st_size < 64 << 20 else None
            out.append((str(f), st.st_size, st.st_mtime_ns, content))
        except OSError:
            out.append((str(f), None, None, None))
    return out
