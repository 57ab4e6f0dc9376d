"""eqn.validate emobank=: a model's valence and arousal against people's ratings of EmoBank's sentences."""

import numpy as np
import pytest

from eqn.validate import NEGATIVE, POSITIVE, dimension_scores, read_emobank, validate_emobank
from tests.conftest import ROOT, SHARED_DATA

FIXTURE = ROOT / "tests" / "fixtures" / "emobank" / "emobank.csv"


def test_dimensions_follow_the_goemotions_sentiment_groups():
    labels = [*POSITIVE, *NEGATIVE, "surprise", "neutral"]
    intensity = np.zeros((2, len(labels)))
    intensity[0, labels.index("joy")] = 8.0
    intensity[1, labels.index("anger")] = 6.0
    intensity[1, labels.index("neutral")] = 9.0
    dims = dimension_scores(intensity, labels)
    assert dims["valence"].tolist() == pytest.approx([8 / len(POSITIVE), -6 / len(NEGATIVE)])
    assert dims["arousal"].tolist() == [8.0, 6.0]  # neutral is not arousal


def test_emobank_report_per_dimension_and_genre(trained_run, capsys):
    bank = read_emobank(FIXTURE)
    assert len(bank) == 8 and set(bank.genre) == {"blog", "letters"}  # the empty text left out
    frame = validate_emobank(
        {
            "ckpt": str(trained_run / "checkpoints" / "eqn.ckpt"),
            "coeqn": str(trained_run / "checkpoints" / "coeqn.ckpt"),
        },
        bank,
        resamples=50,
    )
    paired = frame[frame.model == "ckpt − coeqn"].set_index("emotion")
    alone = {m: frame[frame.model == m].set_index("emotion") for m in ("ckpt", "coeqn")}
    assert paired.spearman.to_numpy() == pytest.approx(
        (alone["ckpt"].spearman - alone["coeqn"].spearman).loc[paired.index].to_numpy(), nan_ok=True
    )
    frame = frame[frame.model == "ckpt"]
    assert set(frame.emotion) == {f"{d} ({g})" for d in ("valence", "arousal") for g in ("all", "blog", "letters")}
    from eqn import load

    model = load(str(trained_run / "checkpoints" / "eqn.ckpt"))
    dims = dimension_scores(model.intensities(model.scores(bank.text.tolist())).numpy(), model.label_names)
    from scipy.stats import spearmanr

    row = frame[frame.emotion == "valence (all)"].iloc[0]
    assert row.n == 8 and row.spearman == pytest.approx(spearmanr(dims["valence"], bank.V).statistic)
    from eqn.validate import main

    main([f"ckpt={trained_run / 'checkpoints' / 'eqn.ckpt'}", f"emobank={FIXTURE}", "resamples=20"])
    assert "valence (all)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="one of them"):
        main([f"emobank={FIXTURE}", f"ratings={FIXTURE}"])


def test_the_paired_difference_of_two_models_correlations():
    from eqn.validate import paired_difference

    rng = np.random.default_rng(0)
    rating = rng.normal(size=300)
    close, far = rating + rng.normal(scale=0.3, size=300), rng.normal(size=300)
    d = paired_difference(close, far, rating, resamples=400)
    assert d["spearman_low"] > 0.5 and d["spearman_p"] < 0.01  # the close model tracks the ratings far better
    same = paired_difference(close, close, rating, resamples=100)
    assert same["spearman"] == 0 and same["spearman_p"] == 1.0


def test_the_real_emobank_reads_whole():
    path = SHARED_DATA / "emobank" / "emobank.csv"
    if not path.is_file():
        pytest.skip(f"needs EmoBank's emobank.csv in {path.parent} (not present; see the data dir's SOURCES.md)")
    bank = read_emobank(path)
    assert 10_060 <= len(bank) <= 10_062 and bank.genre.nunique() >= 6 and bank.V.between(1, 5).all()
