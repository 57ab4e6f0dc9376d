"""precision=auto: bf16 only where the hardware has it natively, fp32 elsewhere, and the choice is stated."""

import pytest

from eqn.precision import annotation_precision, native_bf16, training_precision


@pytest.mark.parametrize("native,train,annotate", [("1", "bf16-mixed", "bf16"), ("0", "32-true", "fp32")])
def test_auto_follows_the_hardware(monkeypatch, native, train, annotate):
    monkeypatch.setenv("EQN_NATIVE_BF16", native)
    assert training_precision("auto", "cpu")[0] == train and annotation_precision("auto")[0] == annotate
    assert training_precision("32-true", "cpu") == ("32-true", "as configured")  # explicit values are kept
    assert annotation_precision("int8") == ("int8", "as asked")


def test_cpu_flags_decide_without_an_override(monkeypatch):
    import eqn.precision as precision

    monkeypatch.delenv("EQN_NATIVE_BF16", raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    ok, why = native_bf16("cpu")
    assert not ok and "lacks AVX512-BF16" in why
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert native_bf16("cpu") == (True, "the CPU has avx512_bf16")


def test_training_and_annotation_say_what_auto_chose(trained_run, tmp_path, monkeypatch, caplog, capsys):
    from eqn.annotate import annotate_file
    from eqn.run import run
    from tests.conftest import SMALL_TEXTCNN, TINY, compose_config

    monkeypatch.setenv("EQN_NATIVE_BF16", "0")
    cfg = compose_config(
        *TINY,
        *SMALL_TEXTCNN[2:],  # the small TextCNN at its own batch sizes
        "pipeline=baseline",
        "trainer.precision=auto",
        tmp_path=tmp_path,
    )
    with caplog.at_level("INFO"):
        run(cfg, run_dir=str(tmp_path / "run"))
    assert "trainer.precision=auto: 32-true (EQN_NATIVE_BF16=0)" in caplog.text
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["trainer"]["precision"] == "32-true"
    inp = tmp_path / "in.txt"
    inp.write_text("what a day\n")
    annotate_file(
        str(trained_run / "checkpoints" / "eqn.ckpt"),
        str(inp),
        str(tmp_path / "o.csv"),
        progress=False,
        precision="auto",
    )
    assert "precision=auto: fp32 (EQN_NATIVE_BF16=0)" in capsys.readouterr().err
