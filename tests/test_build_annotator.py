"""make annotator's path on tiny data: a given LoRA recipe trained, calibrated, tested, checked against EmoBank's
layout, timed, packed into a folder that loads as the built-in annotator, and annotator.md written."""

import json
import subprocess
import sys

from tests.conftest import ROOT, TINY, tiny_base


def test_build_annotator_on_tiny_data(tmp_path):
    from eqn.builtin import SPEC, load_builtin

    base = tiny_base(tmp_path / "base")
    folder, results = tmp_path / "shipped", tmp_path / "annotator.md"
    args = [
        sys.executable,
        "experiments/build_annotator.py",
        "--out",
        str(tmp_path / "final"),
        "--seeds",
        "0",
        "--no-eqn",
        "--folder",
        str(folder),
        "--results",
        str(results),
        "--emobank",
        str(ROOT / "tests" / "fixtures" / "emobank" / "emobank.csv"),
        "--recipe",
        "pipeline=baseline",
        "+model.backbone.lora={r: 4, target_modules: qv}",
        "model.optimizer.lr=1e-2",
        "--extra",
        f"model.pretrained={base}",
        *TINY,
        "data.max_eval_samples=64",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"EQN_CACHE_DIR": str(tmp_path / "cache"), **__import__("os").environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spec = json.loads((folder / SPEC).read_text())
    assert spec["recipe"][0] == "pipeline=baseline" and "test macro-F1 (thresholds tuned on val)" in spec["figures"]
    assert set(spec["per_label"]) == set(spec["labels"]) and spec["calibration"]["temperature"] > 0
    text = results.read_text()
    assert "## Intensities against people: EmoBank" in text and "valence (all)" in text and "texts/s" in text
    assert "| onnxruntime-fp32 |" in text  # every engine of precision=fast, timed against fp32
    module = load_builtin(folder, base)
    assert module.thresholds.tolist() == __import__("pytest").approx(spec["thresholds"], abs=1e-6)


def test_the_people_verdict_says_which_model_is_closer():
    import pandas as pd

    sys.path.insert(0, str(ROOT / "experiments"))
    from build_annotator import people_verdicts

    row = {"model": "annotator − EQN", "checkpoint": "paired"}
    frame = pd.DataFrame(
        [
            {
                **row,
                "emotion": "valence (all)",
                "spearman": 0.05,
                "spearman_low": 0.02,
                "spearman_high": 0.08,
                "spearman_p": 0.001,
            },
            {
                **row,
                "emotion": "arousal (all)",
                "spearman": -0.01,
                "spearman_low": -0.03,
                "spearman_high": 0.01,
                "spearman_p": 0.4,
            },
            {
                **row,
                "emotion": "arousal (blog)",
                "spearman": -0.2,
                "spearman_low": -0.3,
                "spearman_high": -0.1,
                "spearman_p": 0.001,
            },
        ]
    )
    verdicts = people_verdicts(frame)
    assert len(verdicts) == 2  # all genres only
    assert verdicts[0].startswith("valence: the annotator's intensities are closer")
    assert verdicts[1].startswith("arousal: no significant difference")
