"""The built-in annotator's machinery on a tiny stand-in: a LoRA run on a small base encoder is packed into the
shipped layout (safetensors + JSON + card), loads with its delta merged into the base (the same scores as the run's
own checkpoint, no LoRA at runtime), and a different or tampered base or weights file is refused in one line."""

import json
import shutil

import pytest
import torch

from eqn.annotate import Annotator
from eqn.builtin import CARD, SPEC, WEIGHTS, load_builtin, pack
from eqn.io import DataError
from eqn.models.module import load_module
from eqn.run import run
from tests.conftest import TINY, compose_config, tiny_base


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("builtin")
    base = tiny_base(tmp / "base")
    cfg = compose_config(
        "model=minilm",
        f"model.pretrained={base}",
        "pipeline=baseline",
        *TINY,
        "model.optimizer.lr=1e-2",
        "+model.backbone.lora={r: 4, target_modules: all}",
        "model.backbone.pooling=mean",
        tmp_path=tmp,
    )
    run(cfg, run_dir=str(tmp / "run"))
    ckpt = tmp / "run" / "checkpoints" / "baseline.ckpt"
    folder = pack(ckpt, tmp / "shipped", {"name": "tiny", "version": "0", "command": "pytest"})
    return ckpt, folder, base


def test_the_packed_delta_is_small_and_merges_into_the_base(packed):
    ckpt, folder, base = packed
    assert sorted(p.name for p in folder.iterdir()) == sorted([SPEC, WEIGHTS, CARD])
    from safetensors.torch import load_file

    shipped = load_file(str(folder / WEIGHTS))
    assert all("lora_" in k or k.startswith("head.") for k in shipped)  # mean pooling: the delta and the head only
    module = load_builtin(folder, base)
    assert not any("lora" in n for n, _ in module.named_parameters())  # merged: a plain encoder
    texts = ["thank you so much!", "this is the worst day", ""]
    merged = Annotator(module).annotate(texts)
    original = Annotator(load_module(ckpt)).annotate(texts)
    names = list(module.hparams.label_names)
    assert abs(merged[names].to_numpy() - original[names].to_numpy()).max() <= 0.011  # rounding to 2 decimals
    assert merged["emotions"].tolist() == original["emotions"].tolist()
    spec = json.loads((folder / SPEC).read_text())
    assert spec["thresholds"] == pytest.approx(load_module(ckpt).thresholds.tolist(), abs=1e-6)
    assert "CC BY 4.0" in (folder / CARD).read_text() and "Apache-2.0" in (folder / CARD).read_text()


def test_a_different_or_tampered_base_or_weights_file_is_refused(packed, tmp_path):
    _, folder, base = packed
    other = tmp_path / "base"
    shutil.copytree(base, other)
    data = bytearray((other / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (other / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(DataError, match="is not the base encoder the built-in annotator was trained on"):
        load_builtin(folder, other)
    shipped = tmp_path / "shipped"
    shutil.copytree(folder, shipped)
    weights = bytearray((shipped / WEIGHTS).read_bytes())
    weights[-1] ^= 1
    (shipped / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(DataError, match="does not match the SHA-256 recorded"):
        load_builtin(shipped, base)
    (shipped / SPEC).unlink()
    with pytest.raises(DataError, match="no built-in annotator in this install"):
        load_builtin(shipped, base)


def test_annotate_without_a_checkpoint_names_the_model_or_says_none_is_shipped(packed, tmp_path, monkeypatch, capsys):
    import eqn.builtin
    from eqn.annotate import main

    _, folder, base = packed
    inp = tmp_path / "in.txt"
    inp.write_text("what a day\nthanks!\n")
    monkeypatch.setattr(eqn.builtin, "FOLDER", folder)
    monkeypatch.setattr(eqn.builtin, "base_folder", lambda: base)
    main([f"input={inp}", f"output={tmp_path / 'o.csv'}", "progress=false"])
    err = capsys.readouterr().err
    assert "model: tiny 0 (eqn's built-in annotator" in err
    main(["about"])
    assert "# tiny 0" in capsys.readouterr().out
    import eqn

    assert eqn.load().annotate("what a day")["emotions"].tolist()  # eqn.load() with no argument: the same model
    monkeypatch.setattr(eqn.builtin, "FOLDER", tmp_path / "none")
    with pytest.raises(SystemExit, match="no built-in annotator in this install"):
        main([f"input={inp}", f"output={tmp_path / 'p.csv'}"])


@pytest.mark.parametrize("pooling", ["mean", "cls", "mean-soft_bce"])
def test_a_mean_or_cls_pooled_model_exports_as_a_standard_transformers_folder(packed, tmp_path, pooling):
    """Mean (the built-in's) or [CLS] pooling -> Linear, the delta merged: transformers' XLMForSequenceClassification
    computes BERT's layers, so its own classes give eqn's scores, and eqn.load reads the folder back. A distilled
    classifier (soft_bce: BCE on graded targets) is a multi-label classifier there too (sigmoid)."""
    import copy

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    import eqn
    from eqn.export import export

    ckpt, _, _ = packed
    module = load_module(ckpt)
    if pooling == "cls":  # the same weights read through the [CLS] token
        module = copy.deepcopy(module)
        module.backbone.pooling = module.hparams.backbone["pooling"] = "cls"
    if pooling.endswith("soft_bce"):  # the same weights as a distilled classifier
        module.hparams.objective = "soft_bce"
    src = tmp_path / "model.ckpt"
    from eqn.stages import save_final_checkpoint

    save_final_checkpoint(module, src)
    folder = export(src, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["XLMForSequenceClassification"]
    assert config["problem_type"] == "multi_label_classification"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["thank you so much!", "this is the worst day of my whole life, honestly", "ok"]
    ours = Annotator(load_module(src)).scores(texts)
    for text, row in zip(texts, ours):  # one text per call: no padding
        with torch.no_grad():
            logits = model(**tokenizer([text], return_tensors="pt")).logits[0]
        assert torch.allclose(torch.sigmoid(logits), row, atol=1e-5)  # BCE: scores are probabilities
    annotate = pipeline("text-classification", model=str(folder), top_k=None)
    names = list(module.hparams.label_names)
    for row, got in zip(ours.tolist(), annotate(texts)):
        theirs = {d["label"]: d["score"] for d in got}
        assert max(abs(theirs[n] - s) for n, s in zip(names, row)) < 1e-5
    back = eqn.load(folder).annotate(texts)
    assert back["emotions"].tolist() == Annotator(load_module(src)).annotate(texts)["emotions"].tolist()
    assert abs(back[names].to_numpy() - Annotator(load_module(src)).annotate(texts)[names].to_numpy()).max() <= 0.011


def test_export_builtin_gives_a_pipeline_with_eqns_scores(packed, tmp_path, monkeypatch):
    import eqn.builtin
    from eqn.export import main

    _, folder, base = packed
    monkeypatch.setattr(eqn.builtin, "FOLDER", folder)
    monkeypatch.setattr(eqn.builtin, "base_folder", lambda: base)
    main(["builtin", f"out={tmp_path / 'hf'}"])
    from transformers import pipeline

    annotate = pipeline("text-classification", model=str(tmp_path / "hf"), top_k=None)  # sigmoid: multi-label
    texts = ["thank you so much!", "this is the worst day"]
    ours = Annotator.from_checkpoint().scores(texts)
    labels = list(load_builtin(folder, base).hparams.label_names)
    for row, got in zip(ours.tolist(), annotate(texts)):
        theirs = {d["label"]: d["score"] for d in got}
        assert max(abs(theirs[n] - s) for n, s in zip(labels, row)) < 1e-5
    assert (tmp_path / "hf" / "README.md").read_text() == (folder / CARD).read_text()
