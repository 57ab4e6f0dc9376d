"""python -m eqn.app: a local page to look at micro-emotions instead of reading them (Gradio: pip install "eqn[app]").

    python -m eqn.app [ckpt=<model>] [compare=<model>] [runs=outputs] [host=127.0.0.1] [port=7860] [max_rows=20000]

- One text: every label's 0-10 intensity as sorted bars, each label's threshold marked, the decided emotions
  highlighted; the numbers as a table with a copy button.
- Compare: the same text scored by two models side by side (by default `ckpt` against `compare`, e.g. EQN against
  the baseline of the same run) and the differences.
- A file: CSV / TSV / JSONL / TXT in, the annotated file back in its own format (eqn.annotate's readers
  and writers: the input's rows, in order), with charts of what came out: how often each emotion is decided, the
  intensity per label, which emotions are decided together, the top texts of a label. At most `max_rows` rows
  (default 20,000; eqn.annotate has no limit).
- A run: a run directory's metrics per stage, its figures and its intensities-vs-people results, where present.

A model (`ckpt=`, `compare=`, or chosen in the page) is a run checkpoint, an exported folder or "builtin" (the
default: the built-in annotator, or the newest checkpoint under `runs` if none is installed). The page listens on
127.0.0.1 unless host= says otherwise and writes only into its own temporary folder (removed when it stops); it
reads a user's files and never writes, moves or deletes them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from eqn.inference import BUILTIN, Annotator
from eqn.tables import INPUTS

MAX_ROWS = 20_000
EXAMPLES = [
    "I can't believe you remembered my birthday, thank you so much!",
    "Honestly I'm a bit nervous about tomorrow, but also kind of excited.",
    "That was the most disappointing ending, what a waste of time.",
    "Wow, I did not see that coming at all.",
]


# ------------------------------------------------------------------------------------------------ models


def find_models(runs: str | Path) -> list[str]:
    """The models a page can offer: "builtin" if installed, then run checkpoints and export folders under `runs`,
    newest first."""
    from eqn.builtin import installed

    found: list[Path] = []
    root = Path(runs)
    if root.is_dir():
        found = [*root.glob("**/checkpoints/*.ckpt"), *(p.parent for p in root.glob("**/export/*/config.json"))]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return ([BUILTIN] if installed() else []) + [str(p) for p in found]


class Models:
    """Loaded models by source, loaded once each."""

    def __init__(self):
        self.loaded: dict[str, Annotator] = {}

    def get(self, source: str) -> Annotator:
        source = source or BUILTIN
        if source not in self.loaded:
            self.loaded[source] = Annotator.from_checkpoint(source)
        return self.loaded[source]


def label_thresholds(model: Annotator) -> np.ndarray:
    """Each label's threshold on the 0..scale intensity range."""
    return model.intensities(model.thresholds[None])[0].numpy()


# ------------------------------------------------------------------------------------------------ one text


def score_text(model: Annotator, text: str) -> tuple[pd.DataFrame, list[str]]:
    """(label, intensity, threshold, decided) for every label, strongest first, and the decided emotions: the
    numbers eqn.annotate writes (intensities rounded to 2 decimals)."""
    row = model.annotate([text]).iloc[0]
    decided = [e for e in str(row[model.emotions_column]).split(",") if e]
    table = pd.DataFrame(
        {
            "label": model.label_names,
            "intensity": [float(row[c]) for c in model.label_columns],
            "threshold": [round(float(t), 2) for t in label_thresholds(model)],
            "decided": ["yes" if n in decided else "" for n in model.label_names],
        }
    )
    return table.sort_values("intensity", ascending=False, kind="stable").reset_index(drop=True), decided


def bars(table: pd.DataFrame, scale: float, title: str):
    """Horizontal bars, strongest at the top; decided emotions in colour, the others grey; thresholds as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.26 * len(table))))
    y = np.arange(len(table))[::-1]
    colours = ["#d9480f" if d else "#adb5bd" for d in table.decided]
    ax.barh(y, table.intensity, color=colours)
    ax.scatter(table.threshold, y, marker="|", s=120, color="#212529", label="threshold", zorder=3)
    ax.set_yticks(y, table.label)
    ax.set_xlim(0, scale)
    ax.set_xlabel(f"intensity (0-{scale:g})")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    return fig


def compare_texts(a: Annotator, b: Annotator, text: str, name_a: str, name_b: str):
    """Two models on one text: a table (label, A, B, B - A), both decisions, and paired bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ta, da = score_text(a, text)
    tb, db = score_text(b, text)
    joined = ta[["label", "intensity"]].merge(
        tb[["label", "intensity"]], on="label", how="outer", suffixes=(" A", " B")
    )
    joined["B - A"] = (joined["intensity B"] - joined["intensity A"]).round(2)
    joined = (
        joined.assign(top=joined[["intensity A", "intensity B"]].max(axis=1))
        .sort_values("top", ascending=False, kind="stable")
        .drop(columns="top")
        .reset_index(drop=True)
    )
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.26 * len(joined))))
    y = np.arange(len(joined))[::-1]
    ax.barh(y + 0.2, joined["intensity A"], height=0.4, color="#1c7ed6", label=f"A: {name_a}")
    ax.barh(y - 0.2, joined["intensity B"], height=0.4, color="#e8590c", label=f"B: {name_b}")
    ax.set_yticks(y, joined.label)
    ax.set_xlabel("intensity")
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    fig.tight_layout()
    return joined, ", ".join(da) or "–", ", ".join(db) or "–", fig


# ------------------------------------------------------------------------------------------------ a file


def count_rows(path: str, text_column: str, limit: int) -> int:
    """Rows of an input file, read with eqn.annotate's readers (their errors: one line naming the file and line);
    stops counting once past `limit`."""
    from eqn.tables import read_chunks

    rows = 0
    for chunk in read_chunks(path, text_column, 5000, True):
        rows += len(chunk.frame)
        if rows > limit:
            break
    return rows


def annotate_upload(
    model: Annotator, source: str, upload: str, text_column: str, workdir: Path, max_rows: int
) -> tuple[Path, pd.DataFrame]:
    """The uploaded file annotated by eqn.annotate (same readers, same writers, rows in = rows out) into the
    page's own folder, and the annotation read back for the charts."""
    from eqn.annotate import annotate_file
    from eqn.errors import DataError

    upload_path = Path(upload)
    name = upload_path.name
    kind = upload_path.suffix.lower()
    if kind not in INPUTS:
        raise DataError(name, f"not a file the page reads (its name must end in {', '.join(INPUTS)})")
    rows = count_rows(str(upload_path), text_column, max_rows)
    if rows > max_rows:
        raise DataError(
            name,
            f"more than max_rows={max_rows:,} rows; annotate it with `python -m eqn.annotate "
            f"input={name} output=...` (no limit), or start the page with a larger max_rows=",
        )
    out_dir = Path(tempfile.mkdtemp(dir=workdir))
    # the input's own format; plain text has no columns to add to: it comes back as CSV (text + one column a label)
    output = out_dir / f"{upload_path.stem}.annotated{'.csv' if kind == '.txt' else kind}"
    annotate_file(source, str(upload_path), str(output), text_column=text_column, progress=True, annotator=model)
    return output, read_back(output, model)


def read_back(output: Path, model: Annotator) -> pd.DataFrame:
    """The annotated file's intensity columns and decisions (and the text), whatever its format."""
    from eqn.tables import output_format

    kind = output_format(str(output))  # the name the writer chose its format by
    if kind == "parquet":
        frame = pd.read_parquet(output)
    elif kind == "jsonl":
        frame = pd.read_json(output, lines=True, dtype=False)
    else:
        frame = pd.read_csv(output, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    for c in model.label_columns:
        frame[c] = pd.to_numeric(frame[c])
    return frame


def file_charts(frame: pd.DataFrame, model: Annotator):
    """How often each emotion is decided; mean and spread of each label's intensity; which are decided together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, cols = model.label_names, model.label_columns
    decided = np.array([[n in str(e).split(",") for n in names] for e in frame[model.emotions_column]])
    counts = decided.sum(0)
    order = np.argsort(-counts, kind="stable")
    freq, ax = plt.subplots(figsize=(7, max(3.0, 0.26 * len(names))))
    ax.barh(np.arange(len(names))[::-1], counts[order], color="#d9480f")
    ax.set_yticks(np.arange(len(names))[::-1], [names[j] for j in order])
    ax.set_xlabel(f"texts where the emotion is decided (of {len(frame)})")
    freq.tight_layout()
    values = frame[cols].to_numpy(dtype=float)
    order = np.argsort(-values.mean(0), kind="stable")
    spread, ax = plt.subplots(figsize=(7, max(3.0, 0.26 * len(names))))
    ax.boxplot([values[:, j] for j in order][::-1], vert=False, showfliers=False)
    ax.scatter(values.mean(0)[order][::-1], np.arange(1, len(names) + 1), color="#1c7ed6", zorder=3, label="mean")
    ax.set_yticks(np.arange(1, len(names) + 1), [names[j] for j in order][::-1])
    ax.set_ylim(0.4, len(names) + 0.6)
    ax.set_xlabel("intensity (box: quartiles; dot: mean)")
    ax.legend(loc="lower right", frameon=False)
    spread.tight_layout()
    together = decided.T.astype(float) @ decided.astype(float)
    heat, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(together, cmap="magma_r")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("texts where both emotions are decided")
    heat.colorbar(image, ax=ax, shrink=0.8)
    heat.tight_layout()
    return freq, spread, heat


def top_texts(frame: pd.DataFrame, model: Annotator, text_column: str, label: str, k: int = 10) -> pd.DataFrame:
    """The k texts with the highest intensity of `label`."""
    if frame is None or not label:
        return pd.DataFrame(columns=["text", "intensity", "emotions"])
    column = model.label_columns[model.label_names.index(label)]
    top = frame.sort_values(column, ascending=False, kind="stable").head(k)
    return pd.DataFrame(
        {"text": top[text_column].astype(str), "intensity": top[column], "emotions": top[model.emotions_column]}
    ).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ a run


def run_summary(run_dir: str) -> tuple[pd.DataFrame, list[str], pd.DataFrame | None]:
    """A run directory's test and validation metrics per stage, its figures, and its intensities-vs-people table
    where one was written there (eqn.validate output=...csv)."""
    from eqn.errors import DataError
    from eqn.io import read_json

    folder = Path(run_dir)
    if not (folder / "metrics.json").is_file():
        raise DataError(folder, "no metrics.json here: not a finished run directory")
    metrics = read_json(folder / "metrics.json")
    rows: dict[tuple[str, str], dict] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[1] in ("val", "test"):
            rows.setdefault((parts[0], parts[1]), {})[parts[2]] = value
    table = pd.DataFrame(
        [
            {
                "stage": s,
                "split": sp,
                **{
                    k: round(v, 4)
                    for k, v in m.items()
                    if k in ("f1_macro", "f1_micro", "accuracy", "subset_accuracy", "mse", "spearman")
                },
            }
            for (s, sp), m in rows.items()
        ]
    )
    figures = [str(p) for p in sorted((folder / "analysis").glob("*.png"))] if (folder / "analysis").is_dir() else []
    people = None
    for path in sorted(folder.glob("*.csv")):
        head = pd.read_csv(path, nrows=2)
        if {"model", "emotion", "spearman"} <= set(head.columns):
            people = pd.read_csv(path)
            break
    return table, figures, people


# ------------------------------------------------------------------------------------------------ the page


def build(models: Models, choices: list[str], default: str, other: str, max_rows: int, runs: str, workdir: Path):
    import gradio as gr

    from eqn.errors import ConfigError, DataError

    def fail(err: Exception):
        return gr.Error(" ".join(str(err).split()), print_exception=False)

    def one(text, source):
        try:
            model = models.get(source)
            table, decided = score_text(model, text or "")
        except (DataError, ConfigError, OSError) as err:
            raise fail(err) from None
        title = ", ".join(decided) if decided else "–"
        return bars(table, float(model.module.hparams.scale), Path(str(source)).name), table, title

    def two(text, a, b):
        try:
            return compare_texts(models.get(a), models.get(b), text or "", Path(a).name, Path(b).name)
        except (DataError, ConfigError, OSError) as err:
            raise fail(err) from None

    def upload(path, text_column, source, progress=gr.Progress(track_tqdm=True)):
        if not path:
            raise gr.Error("choose a file first", print_exception=False)
        try:
            model = models.get(source)
            output, frame = annotate_upload(model, source, path, text_column or "text", workdir, max_rows)
        except (DataError, ConfigError, OSError) as err:
            raise fail(err) from None
        freq, spread, heat = file_charts(frame, model)
        label = model.label_names[int(np.argmax(frame[model.label_columns].to_numpy(dtype=float).mean(0)))]
        return (
            str(output),
            freq,
            spread,
            heat,
            gr.update(choices=model.label_names, value=label),
            top_texts(frame, model, text_column or "text", label),
            frame,
            f"{len(frame)} rows annotated by {source}",
        )

    def show_run(run_dir):
        try:
            table, figures, people = run_summary(run_dir)
        except (DataError, OSError, ValueError) as err:
            raise fail(err) from None
        return table, figures, people

    runs_found = sorted({str(Path(c).parent.parent) for c in choices if c.endswith(".ckpt")})
    with gr.Blocks(title="eqn: micro-emotion intensities") as page:
        gr.Markdown(
            "## eqn — every emotion's intensity, 0 to 10\nThe decided emotions are coloured; each bar's tick is "
            "its label's threshold (tuned on validation)."
        )
        with gr.Tab("One text"):
            with gr.Row():
                text = gr.Textbox(label="Text", lines=3, elem_id="text", scale=3)
                model = gr.Dropdown(choices, value=default, label="Model", allow_custom_value=True, elem_id="model")
            gr.Examples(EXAMPLES, inputs=text)
            go = gr.Button("Annotate", variant="primary", elem_id="annotate")
            emotions = gr.Textbox(label="Decided emotions", elem_id="emotions", interactive=False)
            with gr.Row():
                chart = gr.Plot(label="Intensities", elem_id="chart")
                numbers = gr.Dataframe(label="Numbers", elem_id="numbers", buttons=["copy"], interactive=False)
            go.click(one, [text, model], [chart, numbers, emotions])
            text.submit(one, [text, model], [chart, numbers, emotions])
        with gr.Tab("Compare models"):
            with gr.Row():
                ctext = gr.Textbox(label="Text", lines=3, elem_id="ctext", scale=2)
                a = gr.Dropdown(choices, value=default, label="Model A", allow_custom_value=True)
                b = gr.Dropdown(choices, value=other, label="Model B", allow_custom_value=True)
            gr.Examples(EXAMPLES, inputs=ctext)
            cgo = gr.Button("Compare", variant="primary", elem_id="compare")
            with gr.Row():
                ea = gr.Textbox(label="A decides", interactive=False)
                eb = gr.Textbox(label="B decides", interactive=False)
            with gr.Row():
                cchart = gr.Plot(label="A and B")
                ctable = gr.Dataframe(label="Differences", elem_id="differences", buttons=["copy"], interactive=False)
            cgo.click(two, [ctext, a, b], [ctable, ea, eb, cchart])
        with gr.Tab("A file"):
            gr.Markdown(
                f"CSV, TSV, JSONL or TXT, at most {max_rows:,} rows: the annotated file comes back in "
                "the same format, every row in order, with one column per label and `emotions`."
            )
            with gr.Row():
                infile = gr.File(label="Input file", file_types=list(INPUTS), elem_id="infile", type="filepath")
                with gr.Column():
                    column = gr.Textbox("text", label="Text column (CSV, TSV, JSONL)", elem_id="column")
                    fmodel = gr.Dropdown(choices, value=default, label="Model", allow_custom_value=True)
                    fgo = gr.Button("Annotate the file", variant="primary", elem_id="annotate_file")
            status = gr.Textbox(label="Done", interactive=False, elem_id="status")
            outfile = gr.File(label="Annotated file", elem_id="outfile")
            with gr.Row():
                freq = gr.Plot(label="How often each emotion is decided")
                spread = gr.Plot(label="Intensity per label")
            heat = gr.Plot(label="Decided together")
            label = gr.Dropdown([], label="Top texts of the label")
            top = gr.Dataframe(label="Top texts", interactive=False, wrap=True)
            state = gr.State()
            fgo.click(upload, [infile, column, fmodel], [outfile, freq, spread, heat, label, top, state, status])
            label.change(
                lambda frame, lab, col, src: top_texts(frame, models.get(src), col or "text", lab),
                [state, label, column, fmodel],
                top,
            )
        with gr.Tab("A run"):
            with gr.Row():
                run_dir = gr.Dropdown(
                    runs_found,
                    value=runs_found[0] if runs_found else None,
                    label="Run directory",
                    allow_custom_value=True,
                    elem_id="run_dir",
                    scale=3,
                )
                rgo = gr.Button("Show", elem_id="show_run")
            rtable = gr.Dataframe(label="Metrics per stage", interactive=False, elem_id="run_metrics")
            gallery = gr.Gallery(label="Figures", columns=2, height="auto")
            people = gr.Dataframe(
                label="Intensities against people's ratings (eqn.validate output, if any)", interactive=False
            )
            rgo.click(show_run, [run_dir], [rtable, gallery, people])
    return page


USAGE = (
    "usage: python -m eqn.app [ckpt=<model>] [compare=<model>] [runs=outputs] [host=127.0.0.1] [port=7860] "
    "[max_rows=20000]"
)


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import one_line, parse

    args = parse(
        argv,
        "eqn.app",
        USAGE,
        known=("ckpt", "compare", "runs", "host", "port", "max_rows"),
        ints={"port": 1, "max_rows": 1},
        doc=__doc__,
    )
    try:
        import gradio  # noqa: F401
    except ImportError:
        sys.exit('eqn.app: the page needs Gradio: pip install "eqn[app]"')
    runs = args.get("runs", "outputs")
    choices = find_models(runs)
    for key in ("ckpt", "compare"):
        if args.get(key) and args[key] not in choices:
            choices.insert(0 if key == "ckpt" else 1, args[key])
    if not choices:
        sys.exit(
            f"eqn.app: no model: no built-in annotator is installed and no checkpoint under {runs}; pass "
            "ckpt=<checkpoint or exported folder>"
        )
    default = args.get("ckpt") or choices[0]
    other = args.get("compare") or next((c for c in choices if c != default), default)
    models = Models()
    with one_line("eqn.app"):
        models.get(default)  # a model that cannot load: one line before the page starts
    workdir = Path(tempfile.mkdtemp(prefix="eqn-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")  # Gradio's uploads and caches: inside the page's folder
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        page = build(models, choices, default, other, args.get("max_rows", MAX_ROWS), runs, workdir)
        host, port = args.get("host", "127.0.0.1"), args.get("port", 7860)
        print(f"eqn.app: http://{host}:{port} (model: {default}); Ctrl+C stops it", flush=True)
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            show_error=True,
            quiet=True,
            allowed_paths=[str(Path(runs).resolve())],
            footer_links=[],
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the page's own folder only


if __name__ == "__main__":
    main()
