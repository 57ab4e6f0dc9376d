"""Do the intensities mean anything? Correlate a model's intensities with people's ratings.

    python -m eqn.validate ckpt=<checkpoint> ratings=<file> [ckpt2=<other checkpoint>] [output=report.csv]
                           [text_column=text] [emotion_column=emotion] [rating_column=rating] [resamples=1000]

`ratings` is a CSV, TSV or JSONL file with one human rating per row: a text, an emotion (a label name of the
model) and a rating on any numeric scale. For each emotion (and all rows pooled) it prints Pearson and Spearman
r between the model's 0-10 intensity and the ratings, each with a 95% bootstrap interval over rows; with
`ckpt2` the same for a second model side by side (e.g. EQN vs the classifier baseline, whose intensity is
10 x probability). Without ckpt=, the built-in annotator.

    python -m eqn.validate [ckpt=<checkpoint>] emobank=../shared/data/emobank/emobank.csv [ckpt2=...]

EmoBank (Buechel & Hahn 2017, CC BY-SA 4.0: 10,062 sentences of seven genres rated by people for valence and arousal,
1-5; read from the data dir, never copied) checks intensities against people on text that is not Reddit: the
model's valence (mean intensity of GoEmotions' positive labels minus that of its negative ones) against the rated
valence, its arousal (the strongest emotion intensity, neutral aside) against the rated arousal, over all sentences
and per genre (from meta.tsv beside emobank.csv).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eqn import stats
from eqn.errors import DataError
from eqn.io import atomic_path

NAMES = ("pearson", "spearman")


def read_ratings(
    path: str | Path, text_column: str = "text", emotion_column: str = "emotion", rating_column: str = "rating"
) -> pd.DataFrame:
    """The ratings table (text, emotion, rating as float, line); bad rows are a DataError naming the line."""
    from eqn.tables import read_chunks

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "ratings file not found" if not path.exists() else "is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise DataError(path, f"unsupported ratings file type {suffix!r}: use .csv, .tsv or .jsonl")
    # annotation's readers: every row with its true line (after blank lines and multi-line fields too)
    chunks = list(read_chunks(str(path), text_column, 1 << 30))
    frame = pd.concat([c.frame for c in chunks], ignore_index=True) if chunks else pd.DataFrame()
    all_lines = [n for c in chunks for n in c.lines]
    missing = [c for c in (text_column, emotion_column, rating_column) if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; the file has {list(frame.columns)}", 1)
    if frame.empty:
        raise DataError(path, "no ratings in the file")
    lines = np.asarray(all_lines)
    ratings = pd.to_numeric(frame[rating_column], errors="coerce")
    bad = ~np.isfinite(ratings.to_numpy(dtype=float))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"rating {frame[rating_column].iloc[i]!r} is not a number", int(lines[i]))
    texts = frame[text_column]
    not_text = ~texts.map(lambda t: isinstance(t, str) and bool(t.strip()))
    if not_text.any():
        i = int(np.argmax(not_text.to_numpy()))
        raise DataError(path, f"text {texts.iloc[i]!r} is missing or not a string", int(lines[i]))
    return pd.DataFrame(
        {
            "text": texts.astype(str),
            "emotion": frame[emotion_column].astype(str).str.strip(),
            "rating": ratings.astype(float),
            "line": lines,
        }
    )


def correlations(intensity: np.ndarray, rating: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """Pearson and Spearman r with 95% percentile bootstrap intervals (rows resampled with replacement)."""
    x, y = np.asarray(intensity, dtype=float), np.asarray(rating, dtype=float)
    out: dict = {"n": len(x)}
    idx = stats.resample_rows(len(x), resamples, seed)
    for name in NAMES:
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            out[name], out[f"{name}_low"], out[f"{name}_high"] = np.nan, np.nan, np.nan
            continue
        out[name] = stats.correlation(x, y, name)
        out[f"{name}_low"], out[f"{name}_high"] = stats.interval(stats.boot_correlation(x, y, idx, name))
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, rating: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """r(a, rating) - r(b, rating) for Pearson and Spearman, with 95% intervals and two-sided p from a paired
    bootstrap (the same resampled rows for both models)."""
    x1, x2, y = (np.asarray(v, dtype=float) for v in (a, b, rating))
    out: dict = {"n": len(y)}
    idx = stats.resample_rows(len(y), resamples, seed)
    for name in NAMES:
        if len(y) < 3 or min(np.ptp(x1), np.ptp(x2), np.ptp(y)) == 0:
            out[name] = out[f"{name}_low"] = out[f"{name}_high"] = out[f"{name}_p"] = np.nan
            continue
        boot = stats.boot_correlation(x1, y, idx, name) - stats.boot_correlation(x2, y, idx, name)
        out[name] = stats.correlation(x1, y, name) - stats.correlation(x2, y, name)
        out[f"{name}_low"], out[f"{name}_high"] = stats.interval(boot)
        out[f"{name}_p"] = stats.two_sided_p(boot)
    return out


def validate(
    ckpts: dict[str, str], ratings: pd.DataFrame, source: str | Path = "ratings", resamples: int = 1000
) -> pd.DataFrame:
    """One row per (model, emotion) plus 'all' pooled: n, pearson, spearman and their intervals."""
    from eqn import load

    rows = []
    texts = ratings.text.unique().tolist()
    for name, ckpt in ckpts.items():
        annotator = load(ckpt)
        labels = annotator.label_names
        unknown = ~ratings.emotion.isin(labels)
        if unknown.any():
            i = int(np.argmax(unknown.to_numpy()))
            raise DataError(
                source,
                f"emotion {ratings.emotion.iloc[i]!r} is not a label of {ckpt} (labels: {', '.join(labels)})",
                int(ratings.line.iloc[i]),
            )
        table = annotator.intensities(annotator.scores(texts)).numpy()
        row_of = {t: i for i, t in enumerate(texts)}
        col_of = {label: j for j, label in enumerate(labels)}
        intensity = table[ratings.text.map(row_of).to_numpy(), ratings.emotion.map(col_of).to_numpy()]
        groups = [(e, (ratings.emotion == e).to_numpy()) for e in sorted(ratings.emotion.unique())]
        for emotion, mask in groups + [("all", np.ones(len(ratings), dtype=bool))]:
            r = correlations(intensity[mask], ratings.rating.to_numpy()[mask], resamples)
            rows.append({"model": name, "checkpoint": str(ckpt), "emotion": emotion, **r})
    return pd.DataFrame(rows)


# GoEmotions' sentiment grouping (Demszky et al. 2020, Table 2): valence = mean positive - mean negative intensity
POSITIVE = (
    "admiration",
    "amusement",
    "approval",
    "caring",
    "desire",
    "excitement",
    "gratitude",
    "joy",
    "love",
    "optimism",
    "pride",
    "relief",
)
NEGATIVE = (
    "anger",
    "annoyance",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "fear",
    "grief",
    "nervousness",
    "remorse",
    "sadness",
)


def read_emobank(path: str | Path) -> pd.DataFrame:
    """EmoBank (Buechel & Hahn 2017; CC BY-SA 4.0; read from the data dir, never copied): id, split, V, A, D, text
    (1-5 ratings; the authors' weighted reader/writer average), with each sentence's genre from meta.tsv beside it
    when present; the one empty text is left out."""
    from eqn.tables import RaggedRow, csv_records, read_chunks, require_columns

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "EmoBank file not found (emobank.csv from JULIELab/EmoBank, corpus/)")
    chunks = list(read_chunks(str(path), "text", 1 << 30))
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    missing = [c for c in ("id", "V", "A", "text") if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; EmoBank's emobank.csv has id,split,V,A,D,text", 1)
    lines = [n for c in chunks for n in c.lines]
    frame["line"] = lines
    for column in ("V", "A"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(path, f"{column} rating {frame[column].iloc[i]!r} is not a number", int(frame.line.iloc[i]))
        frame[column] = values.astype(float)
    frame = frame[frame.text.str.strip() != ""].reset_index(drop=True)
    meta = path.with_name("meta.tsv")
    if meta.is_file():
        genre = {}
        for line, record in csv_records(meta, "\t"):
            if isinstance(record, RaggedRow):
                raise DataError(meta, f"row {record}", line)
            require_columns(meta, record, ["id", "category"])
            genre[record["id"]] = record["category"]
        frame["genre"] = frame.id.map(genre).fillna("unknown")
    else:
        frame["genre"] = "unknown"
    return frame


def dimension_scores(intensity: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """A model's view of valence (mean intensity of GoEmotions' positive labels minus that of its negative ones) and
    arousal (the strongest intensity of any emotion label, neutral left out)."""
    missing = [n for n in (*POSITIVE, *NEGATIVE) if n not in labels]
    if missing:
        raise DataError("ckpt", f"EmoBank's valence needs GoEmotions' labels; this model lacks {missing[:4]}")
    col = {n: j for j, n in enumerate(labels)}
    emotions = [j for n, j in col.items() if n != "neutral"]
    return {
        "valence": intensity[:, [col[n] for n in POSITIVE]].mean(1) - intensity[:, [col[n] for n in NEGATIVE]].mean(1),
        "arousal": intensity[:, emotions].max(1),
    }


def validate_emobank(ckpts: dict[str, str | None], bank: pd.DataFrame, resamples: int = 1000) -> pd.DataFrame:
    """One row per (model, dimension, genre) plus 'all' genres: the model's valence against V and its arousal
    against A, Pearson and Spearman with 95% bootstrap intervals. With two models, rows "<first> − <second>" give
    the paired difference of each correlation (same resampled rows for both; p two-sided)."""
    from eqn import load

    rows, dims = [], {}
    groups = [("all", np.ones(len(bank), dtype=bool))] + [
        (g, (bank.genre == g).to_numpy()) for g in sorted(bank.genre.unique()) if g != "unknown"
    ]
    for name, ckpt in ckpts.items():
        annotator = load(ckpt)
        intensity = annotator.intensities(annotator.scores(bank.text.tolist())).numpy()
        dims[name] = dimension_scores(intensity, annotator.label_names)
        for dim, rating in (("valence", "V"), ("arousal", "A")):
            for genre, mask in groups:
                r = correlations(dims[name][dim][mask], bank[rating].to_numpy()[mask], resamples)
                rows.append({"model": name, "checkpoint": str(ckpt or "builtin"), "emotion": f"{dim} ({genre})", **r})
    if len(dims) == 2:
        (a, da), (b, db) = dims.items()
        for dim, rating in (("valence", "V"), ("arousal", "A")):
            for genre, mask in groups:
                r = paired_difference(da[dim][mask], db[dim][mask], bank[rating].to_numpy()[mask], resamples)
                rows.append({"model": f"{a} − {b}", "checkpoint": "paired", "emotion": f"{dim} ({genre})", **r})
    return pd.DataFrame(rows)


def render(frame: pd.DataFrame) -> str:
    def cell(row, name):
        if np.isnan(row[name]):
            return "–"
        return f"{row[name]:+.3f} [{row[f'{name}_low']:+.3f}, {row[f'{name}_high']:+.3f}]"

    def p(row, name):
        value = row.get(f"{name}_p", np.nan)
        return "" if value is None or np.isnan(value) else f" p={value:.3g}"

    lines = ["| model | emotion | n | Pearson r [95% CI] | Spearman r [95% CI] |", "|---|---|---|---|---|"]
    for _, row in frame.iterrows():
        lines.append(
            f"| {row['model']} | {row['emotion']} | {row['n']} | {cell(row, 'pearson')}{p(row, 'pearson')} | "
            f"{cell(row, 'spearman')}{p(row, 'spearman')} |"
        )
    return "\n".join(lines)


USAGE = (
    "usage: python -m eqn.validate [ckpt=<checkpoint>] ratings=<file>|emobank=<emobank.csv> [ckpt2=<checkpoint>] "
    "[output=report.csv] "
    "[overwrite=true] [text_column=text] [emotion_column=emotion] [rating_column=rating] [resamples=1000]"
)


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import one_line, parse
    from eqn.errors import ConfigError
    from eqn.ownership import check_output

    args = parse(
        argv,
        "eqn.validate",
        USAGE,
        known=(
            "ckpt",
            "ckpt2",
            "ratings",
            "emobank",
            "output",
            "overwrite",
            "text_column",
            "emotion_column",
            "rating_column",
            "resamples",
        ),
        ints={"resamples": 1},
        bools=("overwrite",),
        doc=__doc__,
    )
    if ("ratings" in args) == ("emobank" in args):
        sys.exit(f"eqn.validate: give ratings=<file> or emobank=<emobank.csv> (one of them) ({USAGE})")
    args.setdefault("ckpt", None)  # none: the built-in annotator
    with one_line("eqn.validate"):
        if "output" in args:
            if Path(args["output"]).suffix.lower() != ".csv":
                raise ConfigError(f"output={args['output']}: the report is CSV; name it *.csv")
            check_output(
                args["output"],
                args.get("overwrite", False),
                inputs=[p for p in (args.get("ratings") or args["emobank"], args["ckpt"], args.get("ckpt2")) if p],
            )
        ckpts = {"ckpt": args["ckpt"], **({"ckpt2": args["ckpt2"]} if "ckpt2" in args else {})}
        if "emobank" in args:
            frame = validate_emobank(ckpts, read_emobank(args["emobank"]), args.get("resamples", 1000))
        else:
            ratings = read_ratings(
                args["ratings"],
                args.get("text_column", "text"),
                args.get("emotion_column", "emotion"),
                args.get("rating_column", "rating"),
            )
            frame = validate(ckpts, ratings, args["ratings"], args.get("resamples", 1000))
        print(render(frame))
        if "output" in args:
            with atomic_path(args["output"]) as tmp:
                frame.to_csv(tmp, index=False, float_format="%.4f")
            print(f"wrote {args['output']}")


if __name__ == "__main__":
    main()
