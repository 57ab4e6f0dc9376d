"""long_texts=truncate|windows: a text longer than the model's max length is cut (counted in the summary line) or
scored in overlapping windows of max length, each label's intensity the maximum over its windows."""

import pytest
import torch

from eqn.annotate import Annotator, annotate_file


@pytest.fixture(scope="module")
def ckpt(trained_run):
    return trained_run / "checkpoints" / "eqn.ckpt"


def long_text(words: int) -> str:
    return " ".join(
        ["thank you so much", "this is terrible and i hate it", "what a surprise"][i % 3] for i in range(words)
    )


def test_windows_take_each_labels_maximum_over_the_windows(ckpt):
    windows = Annotator.from_checkpoint(ckpt, long_texts="windows")
    n = windows.max_length
    text = long_text(n)  # several windows
    short = "thank you"
    got = windows.scores([short, text, short])
    assert windows.long == 1
    ids, lengths, owner = windows.encoder.encode_windows([text], n, overlap=max(1, n // 4))
    assert len(owner) > 2 and (lengths <= n).all()
    per_window = windows.scores_local(torch.from_numpy(ids), torch.from_numpy(lengths), 64)
    assert torch.allclose(got[1], per_window.max(0).values, atol=1e-6)
    truncate = Annotator.from_checkpoint(ckpt)
    cut = truncate.scores([short, text, short])
    assert torch.allclose(cut[1], per_window[0], atol=1e-6) and truncate.long == 1  # truncate: the first window
    assert torch.allclose(got[[0, 2]], cut[[0, 2]], atol=1e-6)  # short texts: one window, the same scores


def test_the_summary_counts_texts_longer_than_the_maximum(ckpt, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("short one\n" + long_text(200) + "\nanother short one\n" + long_text(300) + "\n")
    for mode, words in (("truncate", "cut there"), ("windows", "scored in overlapping windows")):
        stats = annotate_file(str(ckpt), str(inp), str(tmp_path / f"{mode}.csv"), progress=False, long_texts=mode)
        assert stats["longer_than_max"] == 2 and stats["texts"] == 4
        err = capsys.readouterr().err
        assert "2 longer than the model's" in err and words in err
    with pytest.raises(Exception, match="long_texts='pages'"):
        annotate_file(str(ckpt), str(inp), str(tmp_path / "x.csv"), progress=False, long_texts="pages")
