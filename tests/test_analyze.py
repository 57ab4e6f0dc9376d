import json
import shutil

import numpy as np
import pandas as pd
import torch

from eqn.figures import analyze_run, correlation, micro_emotion_stats


def test_pipeline_writes_the_analysis(trained_run):
    out = trained_run / "analysis"
    for name in (
        "correlation.csv",
        "correlation.png",
        "intensity_distribution.png",
        "per_class_f1.png",
        "micro_emotions.json",
    ):
        assert (out / name).stat().st_size > 0, name
    corr = pd.read_csv(out / "correlation.csv", index_col=0)
    assert list(corr.index) == list(corr.columns) and len(corr) == 28
    values = corr.to_numpy()
    assert np.allclose(values, values.T, atol=1e-4) and np.allclose(np.diag(values), 1.0)
    assert (values >= -1).all() and (values <= 1).all()
    stats = json.loads((out / "micro_emotions.json").read_text())["micro_emotions"]
    assert stats["nongold_above_1/mean"] >= stats["nongold_above_3/mean"] >= stats["nongold_above_5/mean"] >= 0
    f1 = pd.read_csv(out / "per_class_f1.csv", index_col=0)
    assert list(f1.columns) == ["coeqn", "eqn"]


def test_analyze_adds_a_baseline_run(trained_run, tmp_path):
    run = tmp_path / "run"  # a copy: the shared run's own analysis stays as the pipeline wrote it (other tests read it)
    shutil.copytree(trained_run, run)
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    metrics = json.loads((run / "metrics.json").read_text())
    fake = {k.replace("eqn/", "baseline/", 1): v for k, v in metrics.items() if k.startswith("eqn/test/")}
    (baseline / "metrics.json").write_text(json.dumps(fake))
    analyze_run(run, [baseline])
    f1 = pd.read_csv(run / "analysis" / "per_class_f1.csv", index_col=0)
    assert list(f1.columns) == ["baseline", "coeqn", "eqn"]


def test_correlation_and_micro_emotion_counts_on_known_values():
    scores = torch.tensor([[1.0, 2.0, 5.0], [2.0, 4.0, 5.0], [3.0, 6.0, 5.0]])
    corr = correlation(scores)
    assert abs(corr[0, 1] - 1.0) < 1e-9 and corr[2, 2] == 1.0 and corr[0, 2] == 0.0  # constant column
    gold = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]]).bool()
    stats = micro_emotion_stats(scores, gold)
    # non-gold cells: [2,5], [2,5], [3,6] -> above 1: 2,2,2; above 3: 1,1,1; above 5: 0,0,1
    assert stats["nongold_above_1/mean"] == 2.0
    assert stats["nongold_above_3/mean"] == 1.0
    assert abs(stats["nongold_above_5/mean"] - 1 / 3) < 1e-9
    assert abs(stats["nongold_above_5/share_of_texts"] - 1 / 3) < 1e-9
