"""The rules that keep baseline-vs-EQN comparisons fair: prior head init for every objective, rank-based
threshold tuning, every decision rule reported, matched budgets, selectable checkpoint rule, paired statistics."""

import json
import math

import pandas as pd
import pytest
import torch
import yaml

from eqn import evaluation, stats
from eqn.data.datamodule import DataSpec
from eqn.io import DataError, load_tensors, save_tensors, write_json
from eqn.models.module import build_module
from eqn.report import report
from eqn.run import run
from tests.conftest import ROOT, TINY, compose_config, needs

RUN = [*TINY, "data.max_train_samples=150", "data.max_eval_samples=80", "logger=csv"]  # the logs are read back


def brute_force_best_f1(scores, gold):
    best = 0.0
    for t in scores.unique():
        pred = scores >= t
        tp = (pred & gold).sum().item()
        denom = pred.sum().item() + gold.sum().item()
        best = max(best, 2 * tp / denom if denom else 0.0)
    return best


def label_f1(pred, gold):
    tp = (pred & gold).sum().item()
    denom = pred.sum().item() + gold.sum().item()
    return 2 * tp / denom if denom else 0.0


def test_tuned_thresholds_reach_the_best_f1_and_ignore_the_score_scale():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(300, 5, generator=g).round(decimals=2)  # many ties
    gold = torch.rand(300, 5, generator=g) < (0.2 + 0.5 * scores)
    t = evaluation.tune_thresholds(scores, gold)
    for c in range(5):
        assert label_f1(scores[:, c] >= t[c], gold[:, c]) == pytest.approx(
            brute_force_best_f1(scores[:, c], gold[:, c])
        )
    # any monotone rescaling (probabilities -> logits -> x 10 intensities) gives identical decisions
    rescaled = 10 * torch.logit(scores.clamp(0.001, 0.999)) ** 3
    t2 = evaluation.tune_thresholds(rescaled, gold)
    assert torch.equal(scores >= t, rescaled >= t2)


def test_a_label_without_validation_positives_is_only_kept_as_top_label():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    gold = torch.tensor([[True, False], [True, False], [True, False]])
    t = evaluation.tune_thresholds(scores, gold)
    assert torch.isfinite(t).all() and t[1] > scores.max()
    assert evaluation.decide(scores, True, t)[:, 1].tolist() == [False, False, True]  # row 3: top label


def test_every_rule_is_reported_with_weighted_f1():
    scores = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.3, 0.4]])
    gold = torch.tensor([[True, True, False], [False, False, True]])
    m = evaluation.all_rule_metrics(scores, gold, True, torch.tensor([0.5, 0.5, 0.5]), 1.0, ["a", "b", "c"])
    for rule in ("tuned", "fixed", "argmax"):
        assert {f"{rule}/f1_macro", f"{rule}/f1_micro", f"{rule}/f1_weighted", f"{rule}/accuracy"} <= m.keys()
    assert m["f1_macro"] == m["tuned/f1_macro"] == 1.0  # the headline is the tuned rule
    assert m["argmax/accuracy"] == 0.5 and m["argmax/top1_in_gold"] == 1.0


@pytest.mark.parametrize("objective", ["bce", "ce", "eqn"])
def test_prior_head_init_starts_every_objective_at_the_label_priors(objective):
    prior = (0.5, 0.3, 0.2) if objective == "ce" else (0.05, 0.3, 0.02)
    spec = DataSpec(("a", "b", "c"), objective != "ce", 50, 0, "{}", "word", 16, prior)
    cfg = compose_config()
    assert cfg.model.head_init == "prior"
    module = build_module(spec, cfg, objective, "s").eval()
    with torch.no_grad():
        module.head[-1].weight.zero_()  # isolate the bias: the output for any text
        scores = module.scores(module(torch.tensor([[3, 4, 5, 6, 7]]), torch.ones(1, 5)))[0]
    expected = torch.tensor(prior) * (10.0 if objective == "eqn" else 1.0)
    assert torch.allclose(scores, expected, atol=1e-5)
    cfg.model.head_init = "default"
    assert not torch.allclose(build_module(spec, cfg, objective, "s").head[-1].bias, module.head[-1].bias)


def test_paired_bootstrap_separates_a_real_gain_from_noise():
    g = torch.Generator().manual_seed(1)
    gold = torch.rand(400, 4, generator=g) < 0.3
    noisy = gold ^ (torch.rand(400, 4, generator=g) < 0.35)
    better = gold ^ (torch.rand(400, 4, generator=g) < 0.1)
    gain = stats.paired_bootstrap([(better, noisy)], gold, resamples=500)
    assert gain["diff"] > 0 and gain["low"] > 0 and gain["p"] <= 0.01
    same = stats.paired_bootstrap([(noisy, noisy)], gold, resamples=500)
    assert same["diff"] == 0 and same["p"] == 1.0
    assert stats.verdict(-0.01, 0.02, 0.4, "EQN", "baseline") == "no significant difference"
    assert stats.verdict(0.01, 0.02, 0.01, "EQN", "baseline") == "EQN better"
    mean, low, high = stats.t_interval([0.01, 0.02, 0.03])
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02 - 4.303 * 0.01 / 3**0.5, abs=1e-4)


def fake_run(root, name, stage, seed, decisions, gold):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    yaml.safe_dump(
        {"data": {"name": "toy"}, "model": {"name": "m"}, "pipeline": {"name": stage}, "seed": seed},
        (run_dir / "config.yaml").open("w"),
    )
    m = evaluation.classification_metrics(decisions, gold, True, ["a", "b", "c"])
    write_json(run_dir / "metrics.json", {f"{stage}/test/{k}": v for k, v in m.items()})
    save_tensors(
        run_dir / "stages" / stage / "test_scores.safetensors",
        {"scores": decisions.float(), "gold": gold, "thresholds": torch.full((3,), 0.5)},
        {"label_names": ["a", "b", "c"], "multi_label": True, "score_scale": 1.0},
    )


def test_report_prints_intervals_and_significance(tmp_path):
    g = torch.Generator().manual_seed(2)
    gold = torch.rand(300, 3, generator=g) < 0.4
    for seed in range(3):
        fake_run(tmp_path, f"b{seed}", "baseline", seed, gold ^ (torch.rand(300, 3, generator=g) < 0.3), gold)
        fake_run(tmp_path, f"e{seed}", "eqn", seed, gold ^ (torch.rand(300, 3, generator=g) < 0.05), gold)
        fake_run(tmp_path, f"c{seed}", "coeqn", seed, gold ^ (torch.rand(300, 3, generator=g) < 0.3), gold)
    md, _ = report(tmp_path, resamples=300)
    text = md.read_text()
    assert "| toy | m | EQN vs baseline | 3 |" in text
    assert "Bootstrap: 300 paired resamples" in text  # the count that was run, not a fixed one
    row = next(line for line in text.splitlines() if "EQN vs baseline | 3" in line)
    assert row.endswith("| EQN better |")
    coeqn = next(line for line in text.splitlines() if "CoEQN vs baseline | 3" in line)
    assert "no significant difference" in coeqn or "better" in coeqn
    per_class = pd.read_csv(tmp_path / "results_per_class.csv")
    assert set(per_class.label) == {"a", "b", "c"} and (per_class.low <= per_class.delta_f1).all()


def test_matched_budget_baseline_trains_as_long_as_the_eqn_pipeline(tmp_path, data_dir):
    cfg = compose_config("pipeline=baseline", "pipeline.budget=matched", *RUN, tmp_path=tmp_path)
    metrics = run(cfg, run_dir=str(tmp_path / "run"))
    assert "baseline_matched/test/f1_macro" in metrics
    logged = pd.read_csv(tmp_path / "run" / "logs" / "baseline_matched" / "metrics.csv")
    assert sorted(logged.epoch.dropna().unique()) == [0, 1]  # 2 x trainer.max_epochs=1


def test_checkpoint_rule_val_f1_keeps_the_best_tuned_epoch(tmp_path, data_dir):
    cfg = compose_config(
        "pipeline=coeqn", "pipeline.monitor=val/f1_macro", *RUN, "trainer.max_epochs=2", tmp_path=tmp_path
    )
    run(cfg, run_dir=str(tmp_path / "run"))
    logged = pd.read_csv(tmp_path / "run" / "logs" / "coeqn" / "metrics.csv")
    per_epoch = logged.dropna(subset=["val/f1_macro"]).groupby("epoch")["val/f1_macro"].last()
    best = torch.load(tmp_path / "run" / "stages" / "coeqn" / "best.ckpt", weights_only=True)
    assert best["epoch"] == int(per_epoch.idxmax())
    assert not torch.allclose(best["state_dict"]["thresholds"], torch.full((28,), 5.0))  # tuned in the val loop


def test_authors_code_preset_regresses_val_unclipped_on_a_train_holdout(tmp_path, data_dir):
    cfg = compose_config("experiment=authors_code", *RUN, tmp_path=tmp_path)
    assert cfg.pipeline.scale == 1.0 and cfg.pipeline.clip is False and cfg.data.val_from_train
    run(cfg, run_dir=str(tmp_path / "run"))
    targets, _ = load_tensors(tmp_path / "run" / "stages" / "regress1" / "targets.safetensors")
    assert set(targets) == {"train", "val"}
    assert targets["train"].max() == 1.0 and len(targets["train"]) == 150
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/val_rows"] == 80


def test_splits_do_not_depend_on_the_run_seed(tmp_path, data_dir):
    needs("tfn3")
    from eqn.data.datamodule import EQNDataModule

    ids = []
    for seed in (0, 1):
        dm = EQNDataModule(
            "tfn3", str(data_dir), {"kind": "word"}, seed=seed, max_train_samples=500, cache_dir=None
        ).prepare()
        ids.append((dm.split("train").ids, dm.split("val").ids))
    assert ids[0] == ids[1]


def test_correlations_and_their_intervals():
    from eqn.validate import correlations

    x = torch.linspace(0, 10, 50).numpy()
    r = correlations(x, x**3, resamples=200)
    assert r["spearman"] == pytest.approx(1.0) and 0.8 < r["pearson"] < 1.0
    assert r["pearson_low"] <= r["pearson"] <= r["pearson_high"]
    flat = correlations(x, x * 0 + 3, resamples=50)
    assert flat["n"] == 50 and flat["pearson"] != flat["pearson"]  # nan: a constant rating has no correlation


def test_validate_compares_two_checkpoints_on_human_ratings(trained_run, tmp_path):
    from eqn.validate import main, read_ratings

    fixture = ROOT / "tests" / "fixtures" / "ratings.csv"
    out = tmp_path / "validity.csv"
    main(
        [
            f"ckpt={trained_run / 'checkpoints' / 'eqn.ckpt'}",
            f"ckpt2={trained_run / 'checkpoints' / 'coeqn.ckpt'}",
            f"ratings={fixture}",
            f"output={out}",
            "resamples=100",
        ]
    )
    frame = pd.read_csv(out)
    assert set(frame.model) == {"ckpt", "ckpt2"}
    assert set(frame.emotion) == {"gratitude", "joy", "anger", "sadness", "surprise", "all"}
    assert (frame[frame.emotion == "all"].n == 25).all() and (frame[frame.emotion == "joy"].n == 5).all()
    finite = frame.dropna(subset=["pearson"])
    assert ((finite.pearson >= -1) & (finite.pearson <= 1)).all()
    bad = tmp_path / "bad.csv"
    bad.write_text("text,emotion,rating\nhello,joy,3\nhi,happiness,2\n")
    with pytest.raises(SystemExit, match=r"bad.csv, line 3: emotion 'happiness' is not a label"):
        main([f"ckpt={trained_run / 'checkpoints' / 'eqn.ckpt'}", f"ratings={bad}"])
    bad.write_text("text,emotion,rating\nhello,joy,high\n")
    with pytest.raises(DataError, match=r"line 2: rating 'high' is not a number"):
        read_ratings(bad)


def test_batch_size_is_global_and_split_over_devices():
    assert compose_config("model=bert").data.batch_size == 24
    assert compose_config("model=bert", "trainer=ddp").data.batch_size == 12  # 2 devices x 12 = the paper's 24
    assert compose_config("model=bert", "trainer=ddp", "data.batch_size=24").data.batch_size == 24  # per device
    cfg = compose_config("model=bert", "trainer.devices=4", "trainer.num_nodes=3")
    assert cfg.data.batch_size == 2
    with pytest.raises(Exception, match="does not split evenly over 5 devices"):
        _ = compose_config("model=bert", "trainer.devices=5").data.batch_size


def test_cosine_schedule_takes_effect():
    spec = DataSpec(("a", "b"), False, 50, 0, "{}", "word", 16, (0.5, 0.5))
    for name in ("linear", "cosine"):
        cfg = compose_config(f"model.scheduler.name={name}", "model.scheduler.warmup_ratio=0.1")
        module = build_module(spec, cfg, "ce", "s")
        module.trainer = type("T", (), {"estimated_stepping_batches": 100})()
        sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
        lrs = []
        for _ in range(100):
            lrs.append(sched.get_last_lr()[0])
            sched.optimizer.step()
            sched.step()
        base = cfg.model.optimizer.lr
        assert lrs[0] == 0 and lrs[10] == pytest.approx(base)  # 10% warm-up
        assert lrs[55] == pytest.approx(
            base * (0.5 * (1 + math.cos(math.pi * 45 / 90))) if name == "cosine" else base * 45 / 90, rel=1e-4
        )


def test_callbacks_group_adds_early_stopping_and_lr_monitor(tmp_path, data_dir):
    cfg = compose_config(
        "pipeline=baseline",
        "callbacks=[early_stopping,lr_monitor]",
        *RUN,
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        tmp_path=tmp_path,
    )
    assert cfg.callbacks.early_stopping.mode == "min"
    run(cfg, run_dir=str(tmp_path / "run"))
    logged = pd.read_csv(tmp_path / "run" / "logs" / "baseline" / "metrics.csv")
    assert any(c.startswith("lr-") for c in logged.columns)
