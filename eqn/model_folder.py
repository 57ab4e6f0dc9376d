"""A model as a shareable folder: written (`export`) in transformers' own layout where the model allows it, else
eqn's; read back by `load_folder` (safetensors weights, config.json, tokenizer, model card). The command line is
eqn/export.py.

- BERT-family encoders with pooled output -> dropout -> Linear (the authors' architecture) export as a standard
  `transformers` model: `AutoModelForSequenceClassification.from_pretrained(folder)` loads it (problem_type
  "regression", id2label/label2id filled in) and `pipeline("text-classification", model=folder, top_k=None,
  function_to_apply="none")` returns the 0-10 intensities of every label.
- BERT-family encoders with mean or [CLS] pooling (the built-in annotator: mean, as all-MiniLM-L6-v2 was trained)
  export as transformers' `XLMForSequenceClassification`, whose layers compute BERT's exactly (post-LayerNorm
  attention and GELU feed-forward; the token-type embedding is folded into the positions and the tokenizer gives no
  token types) and whose summary is a mean ("mean") or the first token ("first") -> Linear. The same pipeline call
  gives eqn's scores. One limit: transformers' "mean" averages over padding too, so batches of texts of different
  lengths (pipeline `batch_size` > 1) shift mean-pooled scores; one text per call (the pipeline's default) is exact.
- The word backbones (ANN, CNN, LSTM, TextCNN) and other encoders export in the same layout with eqn's own small
  model description in config.json ("eqn" key); `eqn.load(folder)` reads every kind.
Loading never runs code: weights are safetensors, the rest JSON, the backbone class comes from eqn's allow-list.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eqn.errors import DataError
from eqn.io import write_json, write_text
from eqn.models.module import CLASSIFIER, EQNModule, load_module, plain
from eqn.ownership import check_output, drop_temp, make_temp, replace_folder

FORMAT = "eqn-model/1"  # config.json["eqn"]["format"]


def transformers_compatible(module: EQNModule) -> bool:
    """True when the model is exactly BertForSequenceClassification's computation (pooler -> dropout -> Linear)."""
    backbone = module.hparams.backbone
    return (
        backbone.get("_target_", "").endswith(".Bert")
        and backbone.get("pooling") == "pooler"
        and backbone.get("hf_config", {}).get("model_type") == "bert"
    )


def xlm_compatible(module: EQNModule) -> bool:
    """True when a BERT encoder with mean or [CLS] pooling is exactly XLMForSequenceClassification's computation."""
    backbone = module.hparams.backbone
    hf = backbone.get("hf_config", {})
    return (
        backbone.get("_target_", "").endswith(".Bert")
        and backbone.get("pooling") in ("mean", "cls")
        and hf.get("model_type") == "bert"
        and hf.get("hidden_act") == "gelu"
        and hf.get("intermediate_size") == 4 * hf.get("hidden_size", 0)
        and (hf.get("position_embedding_type") or "absolute") == "absolute"
    )


def encoder_of(module: EQNModule) -> torch.nn.Module:
    """The Hugging Face encoder inside a BERT-family backbone."""
    from eqn.models.backbones import Bert

    if not isinstance(module.backbone, Bert):
        raise TypeError(f"{type(module.backbone).__name__} is not a Hugging Face encoder backbone")
    return module.backbone.encoder


def xlm_names(n_layers: int) -> dict[str, str]:
    """BertModel's weight names -> XLMForSequenceClassification's (the position row of the folded token type aside)."""
    names = {
        "embeddings.word_embeddings.weight": "transformer.embeddings.weight",
        "embeddings.LayerNorm.weight": "transformer.layer_norm_emb.weight",
        "embeddings.LayerNorm.bias": "transformer.layer_norm_emb.bias",
    }
    parts = {
        "attention.self.query": "attentions.{i}.q_lin",
        "attention.self.key": "attentions.{i}.k_lin",
        "attention.self.value": "attentions.{i}.v_lin",
        "attention.output.dense": "attentions.{i}.out_lin",
        "attention.output.LayerNorm": "layer_norm1.{i}",
        "intermediate.dense": "ffns.{i}.lin1",
        "output.dense": "ffns.{i}.lin2",
        "output.LayerNorm": "layer_norm2.{i}",
    }
    for i in range(n_layers):
        for bert, xlm in parts.items():
            for w in ("weight", "bias"):
                names[f"encoder.layer.{i}.{bert}.{w}"] = f"transformer.{xlm.format(i=i)}.{w}"
    return names


def eqn_config(module: EQNModule) -> dict:
    h = plain(dict(module.hparams))
    return {
        "format": FORMAT,
        "backbone": h["backbone"],
        "label_names": h["label_names"],
        "multi_label": h["multi_label"],
        "objective": h["objective"],
        "scale": h["scale"],
        "head_dropout": h["head_dropout"],
        "max_length": h.get("max_length", 128),
        "thresholds": module.thresholds.tolist(),
        "threshold": h.get("threshold"),
        "stage": h.get("stage"),
    }


def hf_tokenizer(module: EQNModule):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    encoder = json.loads(module.hparams.encoder)
    backend = Tokenizer.from_str(encoder["tokenizer"])
    vocab = backend.get_vocab()
    specials = {
        k: t
        for k, t in (
            ("pad_token", "[PAD]"),
            ("unk_token", "[UNK]"),
            ("cls_token", "[CLS]"),
            ("sep_token", "[SEP]"),
            ("mask_token", "[MASK]"),
        )
        if t in vocab
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=int(module.hparams.get("max_length", 128)), **specials
    )


def classification_head(module: EQNModule) -> dict:
    """What transformers' config says about the head: the labels, and the problem type that tells its pipeline what
    to apply to the logits (EQN's are intensities already: regression, none; a BCE classifier's are logits of
    independent labels: sigmoid; a CE one's of one label: softmax)."""
    names = list(module.hparams.label_names)
    problem = {"bce": "multi_label_classification", "ce": "single_label_classification"}.get(
        CLASSIFIER.get(module.hparams.objective, ""), "regression"
    )
    return {
        "num_labels": len(names),
        "problem_type": problem,
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


def export_transformers(module: EQNModule, folder: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    h = module.hparams
    config = BertConfig(**{k: v for k, v in h.backbone["hf_config"].items() if k not in ("architectures",)})
    config.update(
        {
            **classification_head(module),
            "classifier_dropout": h.head_dropout,
            "architectures": ["BertForSequenceClassification"],
            "eqn": eqn_config(module),
        }
    )
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(encoder_of(module).state_dict())
    model.classifier.load_state_dict(module.head[-1].state_dict())
    model.save_pretrained(folder, safe_serialization=True)
    hf_tokenizer(module).save_pretrained(folder)


def export_xlm(module: EQNModule, folder: Path) -> None:
    """A mean- or [CLS]-pooled BERT encoder + head as transformers' XLMForSequenceClassification (see the docstring)."""
    from transformers import XLMConfig, XLMForSequenceClassification

    h = module.hparams
    hf = h.backbone["hf_config"]
    config = XLMConfig(
        vocab_size=hf["vocab_size"],
        emb_dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        dropout=hf["hidden_dropout_prob"],
        attention_dropout=hf["attention_probs_dropout_prob"],
        gelu_activation=True,
        sinusoidal_embeddings=False,
        causal=False,
        asm=False,
        n_langs=1,
        use_lang_emb=False,
        max_position_embeddings=hf["max_position_embeddings"],
        layer_norm_eps=hf["layer_norm_eps"],
        pad_token_id=hf.get("pad_token_id") or 0,
        bos_token_id=None,
        eos_token_id=None,
        summary_type="mean" if h.backbone["pooling"] == "mean" else "first",
        summary_use_proj=True,
        summary_proj_to_labels=True,
        summary_activation=None,
        summary_first_dropout=h.head_dropout,
        architectures=["XLMForSequenceClassification"],
        **classification_head(module),
    )
    config.update({"eqn": eqn_config(module)})
    model = XLMForSequenceClassification(config)
    bert = encoder_of(module).state_dict()
    weights = {xlm: bert[k] for k, xlm in xlm_names(hf["num_hidden_layers"]).items()}
    weights["transformer.position_embeddings.weight"] = (
        bert["embeddings.position_embeddings.weight"] + bert["embeddings.token_type_embeddings.weight"][0]
    )
    head = module.head[-1].state_dict()
    weights |= {f"sequence_summary.summary.{k}": v for k, v in head.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise RuntimeError(f"XLM layout: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = hf_tokenizer(module)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # no token types: they are folded into positions
    tokenizer.init_kwargs["model_input_names"] = tokenizer.model_input_names
    tokenizer.save_pretrained(folder)


def export_eqn(module: EQNModule, folder: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": FORMAT})
    write_json(folder / "config.json", {"eqn": eqn_config(module), "model_type": "eqn"}, own=False)
    write_text(folder / "tokenizer.json", json.loads(module.hparams.encoder)["tokenizer"], own=False)
    write_json(
        folder / "eqn_tokenizer.json",
        {k: v for k, v in json.loads(module.hparams.encoder).items() if k != "tokenizer"},
        own=False,
    )


def model_card(module: EQNModule, metrics: dict | None, data_name: str | None, hf_native: bool) -> str:
    h = module.hparams
    stage = h.get("stage", "eqn")
    lines = [
        "---",
        "library_name: " + ("transformers" if hf_native else "eqn"),
        "pipeline_tag: text-classification",
        "tags: [emotion, micro-emotion, eqn, regression]",
        "---",
        "",
        f"# EQN micro-emotion intensity model ({stage})",
        "",
        "Trained with [eqn](https://arxiv.org/abs/2411.06160) (Expansion Quantization Network, Zhou, Luo & "
        "Chen). For every text it gives an intensity from 0 to "
        f"{h.scale:g} for **every** label: gold emotions were trained towards {h.scale:g}, and the other labels "
        "towards the intensities a first model (CoEQN) assigned them (label regression), so the weaker "
        "micro-emotions beside the main one are visible."
        if h.objective == "eqn"
        else "A classifier baseline trained with eqn (scores are probabilities).",
        "",
        "## Labels",
        "",
        ", ".join(h.label_names),
        "",
        "## Decisions",
        "",
        (
            "Multi-label: every label whose intensity reaches its threshold (tuned on the validation split), "
            "always the top label."
            if h.multi_label
            else "Single-label: the label with the highest intensity."
        ),
        f"Thresholds: {', '.join(f'{n} {t:.2f}' for n, t in zip(h.label_names, module.thresholds.tolist()))}.",
        "",
        "## Use",
        "",
    ]
    if hf_native:
        apply = {"bce": "sigmoid", "ce": "softmax"}.get(CLASSIFIER.get(h.objective, ""), "none")
        lines += [
            "```python",
            "from transformers import pipeline",
            'annotate = pipeline("text-classification", model="<this folder or repo>", top_k=None, '
            f'function_to_apply="{apply}")',
            'annotate(["I did not expect that, thank you so much!"])',
            "```",
            "",
            f"Each score × {h.scale:g} is eqn's intensity." if apply != "none" else "",
            "",
        ]
    lines += [
        "```python",
        "import eqn",
        'model = eqn.load("<this folder or repo>")',
        'model.annotate(["I did not expect that, thank you so much!"])  # DataFrame: intensities + emotions',
        "```",
        "",
        "## Training data",
        "",
        f"Dataset: `{data_name or 'see the run config'}`. GoEmotions (Demszky et al. 2020) is licensed CC BY 4.0; "
        "other datasets carry their own licences (see the eqn README).",
        "",
    ]
    if metrics:
        keys = [k for k in sorted(metrics) if k.startswith(f"{stage}/test/") and "/f1/" not in k]
        lines += ["## Test metrics (this run)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k[len(stage) + 6 :]} | {metrics[k]:.4f} |" for k in keys] + [""]
    lines += [
        "## Intended use and limits",
        "",
        "Research on emotion intensity and annotation of text corpora. Intensities are model outputs, not "
        "human judgements: they have not been validated against human intensity ratings (see "
        "`python -m eqn.validate`). The model inherits the biases of its training data (Reddit comments for "
        "GoEmotions); do not use it to make decisions about individuals.",
        "",
    ]
    return "\n".join(lines)


def export(
    ckpt: str | Path,
    out: str | Path,
    metrics: dict | None = None,
    data_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model folder atomically (a temporary folder renamed into place). An existing `out` is replaced
    only with overwrite=True and only if it is an eqn export folder whose files are unchanged."""
    from eqn.models.module import merge_lora

    builtin = str(ckpt) == "builtin"
    out = check_output(out, overwrite, inputs=[] if builtin else [ckpt], folder=True)
    if builtin:  # eqn's built-in annotator, its delta merged into the base
        from eqn.builtin import FOLDER, load_builtin, read_spec

        module, data_name = load_builtin(), "goemotions"
        metrics = metrics or {}
        card_extra = (FOLDER / "MODEL_CARD.md").read_text(encoding="utf-8")
        read_spec()
    else:
        module, card_extra = merge_lora(load_module(ckpt)), None  # a LoRA delta exports merged: a plain model
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(out.parent, out.name, directory=True)
    try:
        native = transformers_compatible(module) or xlm_compatible(module)
        (export_transformers if transformers_compatible(module) else export_xlm if native else export_eqn)(module, tmp)
        write_text(tmp / "README.md", card_extra or model_card(module, metrics, data_name, native), own=False)
        replace_folder(tmp, out)
    except BaseException:
        drop_temp(tmp)
        raise
    return out


def load_folder(folder: str | Path, map_location: str = "cpu") -> EQNModule:
    """An EQNModule from an exported folder (either layout); tensors via safetensors, settings via JSON."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        spec = config["eqn"]
        if spec.get("format") != FORMAT:
            raise ValueError(f"unknown format {spec.get('format')!r}")
        if config.get("model_type") == "eqn":
            encoder = json.dumps(
                {
                    **json.loads((folder / "eqn_tokenizer.json").read_text()),
                    "tokenizer": (folder / "tokenizer.json").read_text(encoding="utf-8"),
                }
            )
        else:
            encoder = json.dumps(
                {
                    "kind": "pretrained",
                    "pad_id": config.get("pad_token_id") or 0,
                    "tokenizer": (folder / "tokenizer.json").read_text(encoding="utf-8"),
                }
            )
        module = EQNModule(
            backbone=spec["backbone"],
            label_names=spec["label_names"],
            multi_label=spec["multi_label"],
            objective=spec["objective"],
            scale=spec["scale"],
            head_dropout=spec["head_dropout"],
            encoder=encoder,
            thresholds=spec["thresholds"],
            stage=spec.get("stage") or "eqn",
            max_length=spec["max_length"],
            threshold=spec.get("threshold"),
        )
        weights = load_file(str(folder / "model.safetensors"), device=map_location)
        if config.get("model_type") == "xlm":  # transformers' XLM layout (mean/[CLS] pooling) -> eqn's names
            back = {xlm: bert for bert, xlm in xlm_names(config["n_layers"]).items()}
            positions = weights.pop("transformer.position_embeddings.weight")
            head = {k: weights.pop(f"sequence_summary.summary.{k}") for k in ("weight", "bias")}
            weights = {
                **{f"backbone.encoder.{back[k]}": v for k, v in weights.items() if k in back},
                "backbone.encoder.embeddings.position_embeddings.weight": positions,
                "backbone.encoder.embeddings.token_type_embeddings.weight": torch.zeros(
                    spec["backbone"]["hf_config"].get("type_vocab_size", 2), positions.shape[1]
                ),
                **{f"head.1.{k}": v for k, v in head.items()},
                "thresholds": torch.tensor(spec["thresholds"]),
            }
        elif config.get("model_type") != "eqn":  # transformers layout -> eqn's names
            weights = {
                **{f"backbone.encoder.{k[len('bert.') :]}": v for k, v in weights.items() if k.startswith("bert.")},
                **{f"head.1.{k[len('classifier.') :]}": v for k, v in weights.items() if k.startswith("classifier.")},
                "thresholds": torch.tensor(spec["thresholds"]),
            }
        module.load_state_dict(weights)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as err:
        raise DataError(folder, f"not a readable eqn model folder: {' '.join(str(err).split())[:300]}") from None
    return module.to(map_location).eval()
