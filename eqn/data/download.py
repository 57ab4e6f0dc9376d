"""Fetch a dataset from the Hugging Face hub and lay it out as the original files the readers expect.

    python -m eqn.data download <name> [data_dir=DIR] [overwrite=true]      (make data NAME=<name>)

names: goemotions, emotion6, tfn3, tsa3 (health7 is on Kaggle only: the command says how to get it).
Files go to <data dir>/<name>/ (default: paths.data_dir, i.e. $EQN_DATA_DIR, ../shared/data or data/), written
atomically; afterwards the dataset is read back with its reader and the row counts are checked.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from eqn import hub
from eqn.data import sources
from eqn.errors import DataError
from eqn.io import atomic_path, write_text
from eqn.ownership import check_writable, owns_file

# name -> (hub id, config, expected rows per split as the reader sees them)
HUB = {
    "goemotions": ("google-research-datasets/go_emotions", "simplified", {"train": 43410, "val": 5426, "test": 5427}),
    "emotion6": ("dair-ai/emotion", "split", {"train": 16000, "val": 2000, "test": 2000}),
    "tfn3": ("zeroshot/twitter-financial-news-sentiment", None, {"test": 2388}),
    "tsa3": ("mteb/tweet_sentiment_extraction", None, {"test": 3534}),
}
KAGGLE = {
    "health7": "kaggle datasets download -d suchintikasarkar/sentiment-analysis-for-mental-health, unzip, "
    "and put 'Combined Data.csv' in <data dir>/health7/"
}


def csv_text(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_goemotions(ds, folder: Path) -> None:
    names = ds["train"].features["labels"].feature.names
    write_text(folder / "labels.txt", "\n".join(names), own=False)
    for split, fname in (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")):
        d = ds[split]
        lines = (f"{t}\t{','.join(map(str, ls))}\t{i}\n" for t, ls, i in zip(d["text"], d["labels"], d["id"]))
        write_text(folder / fname, "".join(lines), own=False)


def write_emotion6(ds, folder: Path) -> None:
    for split, fname in (("train", "train.txt"), ("validation", "val.txt"), ("test", "test.txt")):
        d = ds[split]
        write_text(
            folder / fname,
            "".join(f"{t};{sources.EMOTION6_LABELS[y]}\n" for t, y in zip(d["text"], d["label"])),
            own=False,
        )


def write_tfn3(ds, folder: Path) -> None:
    for split, fname in (("train", "sent_train.csv"), ("validation", "sent_valid.csv")):
        d = ds[split]
        write_text(folder / fname, csv_text(["text", "label"], zip(d["text"], d["label"])), own=False)


def write_tsa3(ds, folder: Path) -> None:
    for split, fname in (("train", "train.csv"), ("test", "test.csv")):
        d = ds[split]
        rows = zip(d["id"], d["text"], d["label_text"])
        write_text(folder / fname, csv_text(["textID", "text", "sentiment"], rows), own=False)


WRITERS: dict[str, Callable] = {
    "goemotions": write_goemotions,
    "emotion6": write_emotion6,
    "tfn3": write_tfn3,
    "tsa3": write_tsa3,
}


def download(name: str, data_dir: str | Path, overwrite: bool = False) -> Path:
    """Fetch into a temporary folder, verify it with the dataset's reader, then move the files in. An existing file
    with the same content is kept; one with other content is refused unless overwrite=True and eqn wrote it."""

    if name in KAGGLE:
        raise DataError(Path(data_dir) / name, f"not on the Hugging Face hub; get it with: {KAGGLE[name]}")
    if name not in HUB:
        raise DataError(name, f"unknown dataset; choose one of {sorted([*HUB, *KAGGLE])}")
    hub_id, config, expected = HUB[name]
    folder = Path(data_dir) / name
    if folder.exists() and not folder.is_dir():
        raise DataError(folder, "exists and is not a folder")
    check_writable(folder / "x")
    if not hub.hub_reachable():
        flag = hub.offline_flag()
        raise DataError(
            folder,
            f"cannot download {hub_id}: "
            + (f"{flag}=1 is set in the environment" if flag else "huggingface.co is not reachable from this machine"),
        )
    import datasets

    ds = datasets.load_dataset(hub_id, config)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    from eqn.ownership import drop_temp, make_temp

    staging = make_temp(Path(data_dir), f"{name}.download", directory=True)
    try:
        WRITERS[name](ds, staging / name)
        data = sources.load(name, staging)
        for split, rows in expected.items():
            if len(data.splits[split]) != rows:
                raise DataError(
                    folder,
                    f"downloaded {split} split has {len(data.splits[split])} rows; expected "
                    f"{rows}; nothing was written",
                )
        install(staging / name, folder, overwrite)
    finally:
        drop_temp(staging)
    return folder


def install(new: Path, folder: Path, overwrite: bool) -> None:
    """Copy the verified files of `new` into `folder`, all checked before the first is moved."""
    import filecmp
    import shutil

    moves = []
    for source in sorted(p for p in new.rglob("*") if p.is_file()):
        target = folder / source.relative_to(new)
        if target.exists():
            if target.is_file() and filecmp.cmp(source, target, shallow=False):
                continue  # already there, byte for byte
            if not overwrite:
                raise DataError(
                    target,
                    "exists with other content; nothing was written (pass overwrite=true to "
                    "replace files that eqn downloaded before)",
                )
            if not owns_file(target):
                raise DataError(
                    target,
                    "exists with other content and was not written by eqn; eqn never replaces "
                    "it: move it away first; nothing was written",
                )
        moves.append((source, target))
    for source, target in moves:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import one_line, parse

    names = tuple(sorted([*HUB, *KAGGLE]))
    args = parse(
        argv,
        "eqn.data",
        f"download <{'|'.join(names)}> [data_dir=<folder>] [overwrite=true]",
        known=("command", "name", "data_dir", "overwrite"),
        required=("command", "name"),
        bools=("overwrite",),
        positional=("command", "name"),
        choices={"command": ("download",), "name": names},
        doc=__doc__,
    )
    with one_line("eqn.data"):
        folder = download(
            args["name"], args.get("data_dir") or sources.default_data_dir(), args.get("overwrite", False)
        )
    print(f"{args['name']}: files written to {folder} and verified")


if __name__ == "__main__":
    main()
