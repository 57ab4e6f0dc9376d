"""The intensity table format shared by relabeled_train.csv and annotation outputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from eqn.io import atomic_path


def intensity_frame(columns: dict, intensities: torch.Tensor, label_names: list[str]) -> pd.DataFrame:
    """Given columns first, then one column per label: intensities rounded to 2 decimals."""
    # each given column keeps its values as they are (a list of ints with a None would become floats: 7 -> 7.0)
    frame = pd.DataFrame(
        {
            k: pd.Series(v, dtype=object) if not isinstance(v, pd.Series) else v.reset_index(drop=True)
            for k, v in columns.items()
        }
    )
    values = intensities.detach().cpu().double().numpy().round(2)
    return pd.concat([frame, pd.DataFrame(values, columns=list(label_names), index=frame.index)], axis=1)


def label_columns(label_names: list[str]) -> list[str]:
    """The intensity columns of the relabeled training set: the label names, all prefixed `intensity_` if one of
    them is named like another column (id, text, gold)."""
    return [f"intensity_{n}" for n in label_names] if {"id", "text", "gold"} & set(label_names) else list(label_names)


def write_intensity_csv(path: Path, columns: dict, intensities: torch.Tensor, label_names: list[str]) -> None:
    frame = intensity_frame(columns, intensities, label_columns(label_names))
    from eqn.tables import write_csv

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        write_csv(frame, handle, float_format="%.2f")


def hf_dataset(ids: list[str], texts: list[str], intensities: torch.Tensor, label_names: list[str], gold: torch.Tensor):
    """The annotated training set as a typed `datasets.Dataset`: id, text, one float32 column per label
    (prefixed `intensity_` only if a label is named id, text or gold), gold as a sequence of label names."""
    import datasets

    columns = label_columns(label_names)
    values = intensities.detach().cpu().float().numpy()
    data = {
        "id": list(map(str, ids)),
        "text": list(texts),
        **{c: values[:, j] for j, c in enumerate(columns)},
        "gold": [[label_names[j] for j in row.nonzero().flatten().tolist()] for row in gold.bool()],
    }
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            **{c: datasets.Value("float32") for c in columns},
            "gold": datasets.Sequence(datasets.Value("string")),
        }
    )
    return datasets.Dataset.from_dict(data, features=features)


OFFLINE = (
    "the prediction of a CoEQN model trained on the all-labels targets (gold = scale, others 0), clipped to "
    "[0, {scale:g}] (EQN label regression, Zhou, Luo & Chen, arXiv 2411.06160)"
)


def dataset_card(
    name: str, label_names: list[str], scale: float, model: str, metrics: dict, method: str = OFFLINE
) -> str:
    eqn = {k: v for k, v in metrics.items() if k.startswith("eqn/test/") and k.count("/") == 2}
    coeqn = {k: v for k, v in metrics.items() if k.startswith("coeqn/test/") and k.count("/") == 2}
    lines = [
        "---",
        "task_categories: [text-classification]",
        "tags: [emotion, micro-emotion, eqn]",
        "---",
        "",
        f"# {name}: micro-emotion intensities (EQN label regression)",
        "",
        f"The training split of `{name}` with an intensity from 0 to {scale:g} for every one of its "
        f"{len(label_names)} labels. Gold labels are exactly {scale:g}; every other cell is "
        f"{method.format(scale=scale)}.",
        "",
        "## Columns",
        "",
        "- `id`, `text`: as in the source dataset",
        "- one float32 column per label: the intensity",
        "- `gold`: the source dataset's labels",
        "",
        "## Source and licence",
        "",
        "GoEmotions (Demszky et al. 2020): CC BY 4.0 — keep the attribution."
        if name == "goemotions"
        else "See the source dataset's licence (eqn README, Datasets).",
        "",
        f"## The annotating model: {model}",
        "",
    ]
    if coeqn:
        lines += [
            "CoEQN test metrics: " + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in sorted(coeqn.items())),
            "",
        ]
    if eqn:
        lines += [
            "EQN (trained on these targets) test metrics: "
            + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in sorted(eqn.items())),
            "",
        ]
    lines += ["Intensities are model outputs, not human judgements.", ""]
    return "\n".join(lines)


def write_dataset(run_dir: Path, dataset, card: str) -> None:
    """relabeled/ (datasets.save_to_disk + README.md card) and relabeled_train.parquet, each written atomically;
    an existing relabeled/ is replaced only if every file in it is eqn's."""
    from eqn.ownership import drop_temp, make_temp, replace_folder

    tmp = make_temp(run_dir, "relabeled", directory=True)
    try:
        dataset.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        replace_folder(tmp, run_dir / "relabeled")
    except BaseException:
        drop_temp(tmp)
        raise
    with atomic_path(run_dir / "relabeled_train.parquet") as out:
        dataset.to_parquet(str(out))


def write_relabeled(
    run_dir: Path, pipeline, dm, model: str, metrics: dict, how: str | None = None, fault: str = ""
) -> None:
    """The relabeled training set, the one writer for every way of regressing (dm: the data module with its live
    targets): relabeled_train.csv (pipeline.save_relabeled) and, with pipeline.export, relabeled/ (a datasets
    folder) + relabeled_train.parquet with a dataset card naming the model and how its targets were made."""
    from eqn.interrupt import fault_point

    if not pipeline.save_relabeled:
        return
    split = dm.split("train")
    write_intensity_csv(
        run_dir / "relabeled_train.csv", {"id": split.ids, "text": split.texts}, dm.targets, dm.label_names
    )
    fault_point(f"{fault}:csv")
    if pipeline.export:
        dataset = hf_dataset(split.ids, split.texts, dm.targets, dm.label_names, dm.gold["train"])
        card = dataset_card(dm.name, dm.label_names, pipeline.scale, model, metrics, *([how] if how else []))
        write_dataset(run_dir, dataset, card)
        fault_point(f"{fault}:dataset")


def dataset_folder(run_dir: Path, overwrite: bool = False) -> Path:
    """A folder laid out for the hub (README.md card + data/train.parquet) from a finished run's relabeled/:
    <run>/hub_dataset; an existing one is replaced only with overwrite=True and only if it is eqn's own."""
    import shutil

    from eqn.errors import DataError
    from eqn.ownership import check_output, drop_temp, make_temp, replace_folder

    source = run_dir / "relabeled"
    if not (source / "README.md").exists() or not (run_dir / "relabeled_train.parquet").exists():
        raise DataError(run_dir, "no relabeled/ dataset here (a finished pipeline=eqn run writes one)")
    folder = check_output(run_dir / "hub_dataset", overwrite, folder=True)
    tmp = make_temp(run_dir, "hub_dataset", directory=True)
    try:
        (tmp / "data").mkdir()
        shutil.copy(source / "README.md", tmp / "README.md")
        shutil.copy(run_dir / "relabeled_train.parquet", tmp / "data" / "train.parquet")
        replace_folder(tmp, folder)
    except BaseException:
        drop_temp(tmp)
        raise
    return folder
