"""The health rule (roadmap/health.py, docs/health.md): on the committed runs against their labels by
hand, on histories that show each verdict, live in two real runs (one made to stall and stopped, one
that learns), and in the report of a committed study."""
import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import yaml

from roadmap.config import ConfigError, HealthConfig, validate
from roadmap.files import read_csv, read_json
from roadmap.health import VERDICTS, Context, assess
from roadmap.report import write_report
from roadmap.report.cli import main as report_main
from roadmap.report.collect import collect_with_context, read_run
from roadmap.report.health import confusion, labels_of, verdicts
from roadmap.tracking import read_offline_run
from roadmap.steps import compose_config
from roadmap.train import run

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
LABELS = REPO / "docs" / "health-labels.csv"
E20 = RESULTS / "imagenette-proxy64_e20"
# the tiny real-data setting of test_train.py: 160 train / 80 val images, 5 steps an epoch, quarter width, 64 px
TINY = ["scale=smoke", "scale.max_train_samples=160", "scale.max_val_samples=80", "logger=none", "scale.workers=0"]


def cfg_for(tmp_path, *overrides):
    return compose_config([*TINY, f"data.cache_dir={tmp_path / 'cache'}", *overrides])


# ------------------------------------------------------------------ the committed runs
def test_the_committed_stall_is_flagged_and_slow_starts_are_not():
    h = read_run(E20 / "runs" / "separate_downsampling" / "seed0")["health"]
    assert (h["verdict"], h["epoch"]) == ("stalled", 7), h
    assert "2.287–2.299" in h["reason"] and "epochs 3–7" in h["reason"] and "warm-up of 1.33 epochs" in h["reason"]
    # its other seed; LayerNorm runs at chance for 1, 2 and 4 epochs after warm-up (slow starts) are ok
    for rel in ("imagenette-proxy64_e20/runs/separate_downsampling/seed1", "imagenette-proxy64_e20/runs/layer_norm/seed0",
                "imagenette-proxy48/runs/separate_downsampling/seed0",
                "imagenette-proxy64_d25/runs/separate_downsampling/seed1"):
        assert read_run(RESULTS / rel)["health"]["verdict"] == "ok", rel


def test_every_labelled_committed_run_gets_the_verdict_of_its_label():
    rows = verdicts([RESULTS])  # the folder of studies: every study
    assert len(rows) >= 171 and {r["verdict"] for r in rows} <= set(VERDICTS)
    labels = labels_of(LABELS)
    assert len(labels) >= 171 and sum(v == "unhealthy" for v in labels.values()) == 6
    assert set(labels) <= {r["run"] for r in rows}  # every label names a committed run
    wrong = [(r["run"], r["verdict"]) for r in rows if r["run"] in labels
             and (r["verdict"] != "ok") != (labels[r["run"]] == "unhealthy")]
    assert not wrong
    table = confusion(rows, LABELS)
    n_ok = len(labels) - 6
    assert f"| by hand: ok | {n_ok} | 0 | 0 | {n_ok} |" in table and "| by hand: unhealthy | 0 | 5 | 1 | 6 |" in table


# ------------------------------------------------------------------ each verdict, on a history built for it
def _h(losses, top1=None):
    top1 = top1 or [None] * len(losses)
    return [{"epoch": e + 1, "train_loss": l, "top1": t} for e, (l, t) in enumerate(zip(losses, top1))]


CTX = Context(num_classes=10, epochs=8, warmup_epochs=1.0)  # first epoch after warm-up: 2; window 3


@pytest.mark.parametrize("losses,top1,verdict,epoch", [
    ([2.30, 2.25, 2.20, 2.10, 2.00, 1.95, 1.90, 1.85], [20, 30, 40, 50, 55, 60, 62, 64], "ok", None),
    ([2.31, 2.30, 2.29, 2.295, 2.2, 2.1, 2.0, 1.9], [12, 14, 20, 25, 40, 50, 55, 60], "stalled", 4),
    ([2.31, 2.29, 2.28, 2.25, 2.2, 2.1, 2.0, 1.9], [12, 14, 20, 25, 40, 50, 55, 60], "ok", None),  # 2 of 3: a slow start
    ([2.2, 2.0, 1.9, 1.8, 1.7, 1.7, 2.2, 2.1], [30, 40, 50, 55, 60, 61, 50, 55], "unstable", 7),
    ([2.2, 2.0, 1.9, 1.8, 1.7, 1.7, 1.7, 1.7], [30, 40, 50, 55, 60, 12, 60, 60], "collapsed", 6),
    ([2.2, 2.0, 1.9, 2.29, 2.30, 2.30, 2.30, 2.30], [35, 40, 45, 20, 15, 16, 16, 16], "collapsed", 5),
    ([2.2, 2.1, 2.05, 2.0, 2.0, 2.0, 2.0, 2.0], [12, 13, 13, 14, 14, 14, 14, 14.5], "chance", 8),
    ([2.2, 2.1, float("nan"), 2.0, 2.0, 2.0, 2.0, 2.0], None, "diverged", 3),
])
def test_each_verdict_on_a_history_built_for_it(losses, top1, verdict, epoch):
    h = assess(_h(losses, top1), CTX)
    assert (h.verdict, h.epoch) == (verdict, epoch), h
    # the verdict given live (final=False before the last epoch) is the one given afterwards
    live = next((assess(_h(losses, top1)[:k], CTX, final=k == len(losses)) for k in range(1, len(losses) + 1)
                 if not assess(_h(losses, top1)[:k], CTX, final=k == len(losses)).healthy), None)
    assert (live.verdict, live.epoch) == (verdict, epoch) if live else verdict == "ok"


def test_the_thresholds_are_validated(tmp_path):
    cfg = cfg_for(tmp_path, "scale.health.loss_margin=-1")
    with pytest.raises(ConfigError, match=r"scale.health.loss_margin=-1.*allowed: \[0"):
        validate(cfg)
    with pytest.raises(ConfigError, match="scale.on_unhealthy='halt' is invalid; allowed: continue, stop"):
        validate(cfg_for(tmp_path, "scale.on_unhealthy=halt"))
    assert dict(cfg_for(tmp_path).scale.health) == dataclasses.asdict(HealthConfig())
    assert Context(10, 5).chance_loss == math.log(10) and Context(10, 20).stall_window == 5
    # they judge a run and change no update: no key of theirs makes a variant's run directory
    exclude = yaml.safe_load((REPO / "roadmap" / "conf" / "config.yaml").read_text())["hydra"]["job"]["config"][
        "override_dirname"]["exclude_keys"]
    assert {"scale.on_unhealthy", *(f"scale.health.{f.name}" for f in dataclasses.fields(HealthConfig))} <= set(exclude)


# ------------------------------------------------------------------ live, in real runs
def test_a_run_made_to_stall_is_flagged_live_and_stop_ends_it(imagenette, tmp_path, caplog, monkeypatch):
    """Every update's gradients zeroed (ROADMAP_FAULT=zero_grad): the loss stays at chance; with a
    2-epoch window the rule fires at epoch 3 of 4 and scale.on_unhealthy=stop ends the run there."""
    monkeypatch.setenv("ROADMAP_FAULT", "zero_grad:*")
    cfg = cfg_for(tmp_path, "step=separate_downsampling", "scale.epochs=4", "scale.health.stall_epochs=2",
                  "scale.on_unhealthy=stop", "logger=wandb", "logger.mode=offline")
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="roadmap"):
        metrics = run(cfg, run_dir)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "UNHEALTHY" in r.getMessage()]
    assert len(warned) == 1 and "stalled at epoch 3" in warned[0] and "ln 10 − 0.025 = 2.278" in warned[0], warned
    assert "the run stops here (scale.on_unhealthy=stop)" in warned[0]
    log = (run_dir / "train.log").read_text()
    assert log.count("UNHEALTHY") == 1 and "stalled at epoch 3" in log
    saved = read_json(run_dir / "metrics.json")
    assert saved["status"] == "stopped_unhealthy" and (saved["epochs_done"], saved["epochs"]) == (3, 4)
    assert saved["health"]["verdict"] == "stalled" and saved["health"]["epoch"] == 3 and metrics["health"] == saved["health"]
    assert len(read_csv(run_dir / "history.csv")) == 3
    (wdir,) = (run_dir / "wandb").glob("offline-run-*")
    stored = read_offline_run(wdir)
    assert stored["summary"]["health"] == "stalled" and stored["summary"]["health_epoch"] == 3
    assert "unhealthy-stalled" in stored["run"]["tags"]
    # done: not trained again, and never replaced; the report counts it as stopped, not averaged
    assert run(cfg, run_dir)["finished_at"] == saved["finished_at"]
    rec = read_run(run_dir)
    assert rec["status"] == "stopped" and rec["health"]["verdict"] == "stalled"


def test_a_healthy_smoke_run_is_ok(imagenette, tmp_path):
    """The smoke subset at scale=quick's settings (augmentation off, the modern lr x 8): it learns."""
    cfg = cfg_for(tmp_path, "step=modern_recipe", "scale.augment=off", "scale.lr_mult.modern=8", "scale.epochs=3")
    metrics = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["health"] == {"verdict": "ok", "reason": "no finding in 3 epochs", "epoch": None} == metrics["health"]
    assert saved["status"] == "finished" and saved["top1"] > 15.0  # above the chance margin: 1.5 x 10 %
    assert "UNHEALTHY" not in (tmp_path / "run" / "train.log").read_text()


# ------------------------------------------------------------------ the report of a committed study
def test_the_report_of_a_committed_study_marks_its_flagged_run(tmp_path, capsys):
    study = tmp_path / "results" / E20.name
    shutil.copytree(E20 / "runs", study / "runs")
    grouped = tmp_path / "results" / "peer-check" / "timm-registry"  # a folder of studies inside results/
    shutil.copytree(E20 / "runs" / "layer_norm", grouped / "runs" / "layer_norm")
    # the folder of studies: the flagged runs of every study, and no report written
    assert report_main([str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert f"{E20.name}: 12 runs, 1 flagged:" in out and "separate_downsampling/seed0: stalled at epoch 7" in out
    assert "peer-check/timm-registry: 2 runs, 0 flagged" in out and "a folder of 2 results studies" in out
    assert not (study / "trajectory.md").exists()
    write_report(study, wandb_mode="disabled")
    rows = {r["step"]: r for r in read_csv(study / "trajectory.csv")}
    committed = {r["step"]: r for r in read_csv(E20 / "trajectory.csv")}
    for step, r in committed.items():  # the primary numbers stay as pre-registered: every finished run
        for key in ("top1_mean", "top1_std", "n", "top1_delta_paired", "top1_delta_paired_se"):
            assert rows[step][key] == r[key], (step, key)
    sd = rows["separate_downsampling"]
    assert sd["n_unhealthy"] == "1" and sd["unhealthy"] == "seed 0 stalled (epoch 7)"
    assert float(sd["top1_mean_healthy"]) == pytest.approx(45.55414) and sd["n_healthy"] == "1"
    assert rows["layer_norm"]["unhealthy"] == "" and rows["layer_norm"]["top1_mean_healthy"] == rows["layer_norm"]["top1_mean"]
    assert (rows["modern_recipe"]["init"], sd["init"]) == ("resnet", "convnext")
    summary = read_json(study / "summary.json")
    assert summary["health"]["flagged"] == 1 and summary["health"]["by_verdict"] == {"stalled": 1}
    assert summary["without_unhealthy"]["architecture_gain"]["n"] == 1  # paired over seed 1 only
    md = (study / "trajectory.md").read_text()
    assert "**1 run flagged** by the health rule" in md and "## Health" in md
    assert "### Without the runs the health rule flags (secondary: `separate_downsampling` seed 0 left out)" in md


def test_a_step_whose_every_run_is_flagged_has_no_numbers_without_them():
    rows, context = collect_with_context(RESULTS / "imagenette-proxy48-lr_select")
    (flagged,) = [r for r in rows if r["n_unhealthy"]]
    assert flagged["variant"] == "scale.lr_mult.classic=4" and flagged["unhealthy"] == "seed 0 chance (epoch 7)"
    assert (flagged["top1_mean"], flagged["n"]) == (pytest.approx(12.356688), 1)  # the primary numbers keep it
    assert (flagged["top1_mean_healthy"], flagged["n_healthy"]) == (None, 0)
    assert all(r["top1_mean_healthy"] == r["top1_mean"] for r in rows if r is not flagged)
    assert [r["run_dir"] for r in context["flagged"]] == [flagged["runs"][0]["run_dir"]]
