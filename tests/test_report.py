"""The sweep report (roadmap.report) on synthetic run directories with known values: no training.

Conventions checked here (and stated in trajectory.md): std is the sample standard deviation
over seeds (ddof=1); Δ of a main-path step is against the previous main-path step, a side branch's
against the step it branches from (move_up_dwconv); the uncertainty of a difference of means is
sqrt(s_a²/n_a + s_b²/n_b).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from omegaconf import OmegaConf

from roadmap import report
from roadmap.files import read_csv, read_json, write_json
from roadmap.config import reference
from roadmap.steps import step_info

PAPER = reference()["convnext"]["regimes"]["resnet50"]["top1"]

# step -> top-1 of seeds 0, 1, 2 (finished runs)
TOP1: Dict[str, List[float]] = {
    "baseline": [60.0, 62.0, 64.0],             # mean 62, std 2
    "modern_recipe": [70.0, 71.0, 75.0],        # mean 72, std sqrt(7)
    "stage_ratio": [69.0, 70.0, 71.0],          # mean 70, std 1   (Δ -2: the paper has +0.54)
    "patchify_stem": [73.0, 74.0, 75.0],        # mean 74, std 1
    "move_up_dwconv": [76.0, 77.0, 78.0],       # mean 77
    "kernel_7": [78.0, 79.0, 80.0],             # mean 79          (Δ vs move_up_dwconv)
    "kernel_9": [77.5, 78.5, 79.5],             # branch: Δ vs move_up_dwconv, not kernel_7
    "separate_downsampling": [80.0, 82.0, 84.0],  # mean 82, std 2
}
FAILED = "depthwise_conv"      # every seed has failed.json
RUNNING = "increase_width"     # seed 0: config.yaml, last.pt and one epoch of history.csv
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def _config(step: str, seed: int, ablation: str = "none", epochs: int = 2) -> Dict[str, Any]:
    return {"step": step, "seed": seed, "ablation": ablation, "experiment_name": "roadmap_path",
            "sweep_id": "roadmap_path-imagenette-proxy-resnet50", "results_dir": "results", "out_dir": "outputs",
            "data": {"name": "imagenette", "num_classes": 10},
            "scale": {"name": "proxy", "img_size": 128, "width_mult": 0.5, "epochs": epochs},
            "recipe": {"name": "modern", "epochs": 300}, "regime": {"name": "resnet50"},
            "logger": {"name": "wandb", "mode": "offline", "project": "roadmap", "entity": None, "group": None,
                       "tags": [], "dir": None}}


def make_finished(run_dir: Path, step: str, seed: int, top1: float, ablation: str = "none", **extra: Any) -> None:
    info = step_info(step)
    metrics = {
        "step": step, "step_index": info["index"], "branch": info["branch"], "group": info["group"],
        "label": info["label"], "roadmap": info["roadmap"], "ablation": ablation, "regime": "resnet50",
        "scale": "proxy", "dataset": "imagenette", "seed": seed, "status": "finished",
        "top1": top1, "top5": top1 + 10, "val_loss": 1.0, "train_loss": 1.2, "epochs": 2, "epochs_done": 2,
        "params": 7_000_000 + info["index"], "gflops": 0.5 + info["index"] / 100, "img_size": 128,
        "gflops_224": 4.0 + info["index"] / 10, "params_224": 25_000_000 + info["index"],
        "train_img_s": 1000.0 + 10 * seed, "eval_img_s": 3000.0, "peak_memory_mb": 900.0,
        "wall_seconds": 100.0 + seed, "device": "NVIDIA H100 80GB HBM3", "world_size": 1, "global_batch": 256,
        "train_images": 9469, "val_images": 3925, "git_commit": "abc1234",
        "finished_at": f"2026-01-0{seed + 1} 12:00:00", "config": _config(step, seed, ablation),
    }
    metrics.update(extra)
    write_json(run_dir / "metrics.json", metrics)
    (run_dir / "last.pt").write_bytes(b"checkpoint")


def make_failed(run_dir: Path, step: str, reason: str = OOM) -> None:
    write_json(run_dir / "failed.json", {"step": step, "error": "OutOfMemoryError", "reason": reason,
                                         "traceback": ["..."], "time": "2026-01-01 12:00:00"})


def make_running(run_dir: Path, step: str, seed: int, epochs_done: int = 1, epochs: int = 2) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_config(step, seed, epochs=epochs)))
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    lines = ["epoch,train_loss,train_img_s,lr,train_seconds,top1"]
    lines += [f"{e + 1},2.0,1000.0,0.001,50.0,40.0" for e in range(epochs_done)]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "outputs" / "sweeps" / "roadmap_path-imagenette-proxy-resnet50"
    for step, values in TOP1.items():
        for seed, v in enumerate(values):
            make_finished(root / step / f"seed{seed}", step, seed, v)
    for seed in range(3):
        make_failed(root / FAILED / f"seed{seed}", FAILED)
    make_running(root / RUNNING / "seed0", RUNNING, 0)
    return root


def _mean(xs: List[float]) -> float:
    return sum(xs) / len(xs)


def _std1(xs: List[float]) -> float:  # ddof=1
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


# ---------------------------------------------------------------------------------------------
def test_report_numbers_match_the_runs(sweep: Path, tmp_path: Path) -> None:
    out = report.write_report(sweep, tmp_path / "report", wandb_mode="disabled")
    for name in ("trajectory.csv", "trajectory.md", "trajectory.png", "trajectory.svg", "summary.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_csv(out / "trajectory.csv")
    by = {r["step"]: r for r in rows}

    # roadmap order (step_index), the branch marked
    order = [r["step"] for r in rows]
    assert order == sorted(order, key=lambda s: step_info(s)["index"])
    assert set(order) == set(TOP1) | {FAILED, RUNNING}
    assert by["kernel_9"]["branch"] == "1" and by["kernel_7"]["branch"] == "0"

    # mean, std (ddof=1), n: the csv holds them rounded to 4 decimals
    for step, values in TOP1.items():
        r = by[step]
        assert float(r["top1_mean"]) == round(_mean(values), 4), step
        assert float(r["top1_std"]) == round(_std1(values), 4), step
        assert int(r["n"]) == 3 and r["seeds"] == "0 1 2"
        assert r["state"] == "finished" and r["status"] == "finished"
    assert float(by["modern_recipe"]["top1_std"]) == round(math.sqrt(7), 4)

    # Δ vs the previous main-path step; the branch vs the step it branches from
    expected_delta = {"modern_recipe": ("baseline", 10.0), "stage_ratio": ("modern_recipe", -2.0),
                      "patchify_stem": ("stage_ratio", 4.0), "kernel_7": ("move_up_dwconv", 2.0),
                      "kernel_9": ("move_up_dwconv", 1.5)}
    for step, (ref, delta) in expected_delta.items():
        assert by[step]["delta_vs"] == ref, step
        assert float(by[step]["top1_delta"]) == round(delta, 4), step
        se = math.sqrt(_std1(TOP1[step]) ** 2 / 3 + _std1(TOP1[ref]) ** 2 / 3)
        assert float(by[step]["top1_delta_se"]) == round(se, 4), step
        assert float(by[step]["paper_delta"]) == round(PAPER[step] - PAPER[ref], 4), step
    assert by["kernel_9"]["paper_delta"] == "0.65"  # 80.57 - 79.92, as Table 10 reads
    # no Δ where the reference step did not finish (depthwise_conv failed, inverted_bottleneck/layer_norm absent)
    for step in ("baseline", "move_up_dwconv", "separate_downsampling", FAILED, RUNNING):
        assert by[step]["top1_delta"] == "", step
    assert by["baseline"]["delta_vs"] == "" and by["baseline"]["paper_delta"] == ""
    assert float(by["separate_downsampling"]["paper_delta"]) == round(PAPER["separate_downsampling"] - PAPER["layer_norm"], 4)
    for step in TOP1:
        assert float(by[step]["paper_top1"]) == PAPER[step]
    assert float(by["baseline"]["paper_gflops"]) == 4.09

    # the runs' other columns
    b = by["baseline"]
    assert float(b["gflops_224"]) == 4.0 and float(b["gflops"]) == 0.5 and int(b["params"]) == 7_000_000
    assert int(b["params_224"]) == 25_000_000 and int(b["img_size"]) == 128
    assert float(b["train_img_s"]) == 1010.0 and float(b["wall_s_mean"]) == 101.0 and float(b["wall_s_total"]) == 303.0

    # failed and running steps
    f = by[FAILED]
    assert f["state"] == "failed" and f["status"] == f"failed: {OOM}"
    assert f["n"] == "0" and f["top1_mean"] == "" and f["n_failed"] == "3"
    assert float(f["paper_top1"]) == PAPER[FAILED]
    r = by[RUNNING]
    assert r["state"] == "running" and r["status"] == "running (epoch 1 of 2)" and r["n_running"] == "1"

    # summary: the gain is paired (per seed: 80-60, 82-62, 84-64 = 20 each: SE 0), sign agreement, Spearman
    s = read_json(out / "summary.json")
    g = s["gain"]
    assert (g["from"], g["to"]) == ("baseline", "separate_downsampling")
    assert g["ours"] == pytest.approx(20.0) and g["paired"] is True and g["n"] == 3
    assert g["ours_se"] == pytest.approx(0.0)
    assert g["paper"] == pytest.approx(81.97 - 76.13)
    assert "ddof=1" in g["formula"] and "sqrt(n)" in g["formula"]
    sa = s["sign_agreement"]  # main-path steps with both Δs: modern_recipe, stage_ratio, patchify_stem, kernel_7
    assert (sa["agree"], sa["of"]) == (3, 4)
    assert sa["steps_agree"] == ["modern_recipe", "patchify_stem", "kernel_7"]
    assert sa["steps_disagree"] == ["stage_ratio"]
    # Spearman by hand over the 7 finished main-path steps (kernel_9 is a branch: left out).
    # ours 62 72 70 74 77 79 82 -> ranks 1 3 2 4 5 6 7; paper's ranks 1..7: Σd² = 2, no ties
    sp = s["spearman"]
    assert sp["n"] == 7 and "kernel_9" not in sp["steps"]
    ours = [_mean(TOP1[k]) for k in sp["steps"]]
    paper = [PAPER[k] for k in sp["steps"]]
    rank = lambda xs: [sorted(xs).index(x) + 1 for x in xs]  # noqa: E731 (no ties here)
    d2 = sum((a - b) ** 2 for a, b in zip(rank(ours), rank(paper)))
    assert d2 == 2
    assert sp["rho"] == pytest.approx(1 - 6 * d2 / (7 * (7 ** 2 - 1)))  # = 27/28
    assert sp["rho"] == pytest.approx(27 / 28)
    assert s["runs"] == {"finished": 24, "failed": 3, "running": 1, "missing": 0, "stopped": 0, "unhealthy": 0}


def test_markdown_header_and_summary(sweep: Path, tmp_path: Path) -> None:
    out = report.write_report(sweep, tmp_path / "r", wandb_mode="disabled", command="python -m roadmap.report X")
    md = (out / "trajectory.md").read_text()
    head = md.split("## Per step")[0]
    assert md.startswith("# ResNet-50 → ConvNeXt-T trajectory: imagenette, proxy scale")
    for needle in ("imagenette (10 classes; 9469 train / 3925 val images)", "128 px", "width × 0.5", "2 epochs",
                   "**Seeds:** 0, 1, 2", "NVIDIA H100 80GB HBM3 (24 runs)", "**Total wall time:** 40m24s",
                   str(sweep), "report generated", "Table 10", "## Summary", "+20.00 ± 0.00", "+5.84",
                   "3 of 4 main-path steps", "ρ = 0.96", "ddof=1", "sqrt(s_a²/n_a + s_b²/n_b)"):
        assert needle in head, needle
    table = md.split("## Per step")[1]
    assert f"failed: {OOM}" in table and "running (epoch 1 of 2)" in table
    assert "62.00 ± 2.00 (3)" in table and "*kernel sz. → 9* (branch)" in table


def test_chart_is_a_real_image(sweep: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = report.write_report(sweep, tmp_path / "r", wandb_mode="disabled")
    with Image.open(out / "trajectory.png") as im:
        im.verify()
    with Image.open(out / "trajectory.png") as im:
        w, h = im.size
        assert im.format == "PNG" and w >= 1200 and h >= 600, im.size
        assert len(set(im.convert("RGB").resize((64, 64)).getdata())) > 20  # not blank
    svg = (out / "trajectory.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "failed" in svg and "GFLOPs" in svg  # text is kept as text or paths: at least the labels exist


def test_default_output_dir_and_suffixes(sweep: Path, tmp_path: Path) -> None:
    out = report.write_report(sweep, wandb_mode="disabled", results_dir=tmp_path / "results")
    assert out == tmp_path / "results" / "imagenette-proxy"
    # a branch-only sweep must not overwrite the main trajectory
    branches = tmp_path / "branches"
    make_finished(branches / "kernel_5" / "seed0", "kernel_5", 0, 70.0)
    out = report.write_report(branches, wandb_mode="disabled", results_dir=tmp_path / "results")
    assert out.name == "imagenette-proxy-kernel_branches"


def test_ablation_rows(tmp_path: Path) -> None:
    root = tmp_path / "ablation"
    for seed, (full, no_gelu, no_ln) in enumerate([(80.0, 79.0, 78.0), (82.0, 80.0, 79.0)]):
        make_finished(root / "separate_downsampling" / f"seed{seed},ablation=none", "separate_downsampling", seed, full)
        make_finished(root / "separate_downsampling" / f"seed{seed},ablation=no_layer_norm", "separate_downsampling",
                      seed, no_ln, ablation="no_layer_norm")
        # the ablation is also read from the directory name when metrics lack it
        make_finished(root / "separate_downsampling" / f"seed{seed},ablation=no_gelu", "separate_downsampling",
                      seed, no_gelu, ablation=None)
    out = report.write_report(root, wandb_mode="disabled", results_dir=tmp_path / "results")
    assert out.name == "imagenette-proxy-ablation"
    rows = read_csv(out / "trajectory.csv")
    assert [r["ablation"] for r in rows] == ["none", "no_gelu", "no_layer_norm"]  # reference.yaml order
    by = {r["ablation"]: r for r in rows}
    assert by["none"]["label"] == "ConvNeXt (all changes)" and by["no_gelu"]["label"] == "− ReLU → GELU"
    assert float(by["no_gelu"]["top1_delta"]) == -1.5 and by["no_gelu"]["delta_vs"] == "none"
    assert float(by["no_layer_norm"]["top1_delta"]) == -2.5
    assert float(by["no_gelu"]["top1_delta_se"]) == round(math.sqrt(2 / 2 + 0.5 / 2), 4)
    assert all(r["paper_top1"] == "" and r["paper_delta"] == "" for r in rows)
    s = read_json(out / "summary.json")
    assert s["kind"] == "ablation" and [a["ablation"] for a in s["ablations"]] == ["no_gelu", "no_layer_norm"]
    assert "Leave-one-out" in (out / "trajectory.md").read_text()


def test_planned_but_missing_partial_and_retried(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    (root).mkdir()
    (root / "multirun.yaml").write_text(yaml.safe_dump({
        "hydra": {"sweeper": {"params": {"step": "baseline,modern_recipe,stage_ratio"}},
                  "overrides": {"task": ["seed=range(0,2)", "scale=proxy"]}},
        "step": "separate_downsampling", "seed": 0, "results_dir": "results",
        "data": {"name": "imagenette"}, "scale": {"name": "proxy"}, "regime": {"name": "resnet50"}}))
    make_finished(root / "baseline" / "seed0", "baseline", 0, 60.0)
    make_finished(root / "baseline" / "seed1", "baseline", 1, 62.0)
    make_finished(root / "modern_recipe" / "seed0", "modern_recipe", 0, 70.0)
    make_failed(root / "modern_recipe" / "seed1", "modern_recipe", "loss is nan at epoch 1, step 3")
    rows = {r["step"]: r for r in report.collect(root)}
    assert list(rows) == ["baseline", "modern_recipe", "stage_ratio"]
    assert rows["baseline"]["status"] == "finished"
    assert rows["modern_recipe"]["state"] == "partial"
    assert rows["modern_recipe"]["status"] == "finished (1 of 2 seeds); seed 1 failed: loss is nan at epoch 1, step 3"
    assert rows["modern_recipe"]["n"] == 1 and rows["modern_recipe"]["top1_std"] is None
    assert rows["modern_recipe"]["top1_delta"] == pytest.approx(9.0) and rows["modern_recipe"]["top1_delta_se"] is None
    assert rows["stage_ratio"]["state"] == "missing" and rows["stage_ratio"]["status"] == "missing"
    # a retry that wrote a checkpoint after the failure is running again
    d = root / "modern_recipe" / "seed1"
    make_running(d, "modern_recipe", 1, epochs_done=1, epochs=3)
    os.utime(d / "failed.json", (time.time() - 60, time.time() - 60))
    rows = {r["step"]: r for r in report.collect(root)}
    assert rows["modern_recipe"]["status"] == "finished (1 of 2 seeds); seed 1 running (epoch 1 of 3)"
    out = report.write_report(root, wandb_mode="disabled", results_dir=tmp_path / "res")
    assert (out / "trajectory.png").is_file()


def test_spearman_ties_are_averaged() -> None:
    import numpy as np
    from scipy.stats import rankdata

    x, y = [1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 1.0, 3.0, 3.0, 4.0]
    rho, p, method = report.spearman(x, y)
    # reference: Pearson correlation of the average ranks (ties share their mean rank)
    assert list(rankdata(x)) == [1.0, 2.5, 2.5, 4.0, 5.0]
    assert rho == pytest.approx(float(np.corrcoef(rankdata(x), rankdata(y))[0, 1]))
    assert 0 < p < 1 and "scipy" in method
    assert report.spearman([1.0, 2.0], [1.0, 2.0])[0] is None  # fewer than 3 steps
    assert report.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0] is None  # constant


def test_cli_and_errors(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main([str(sweep), "--out", str(tmp_path / "cli"), "--wandb", "disabled"]) == 0
    assert "ρ = 0.96" in capsys.readouterr().out
    assert (tmp_path / "cli" / "trajectory.md").read_text().count("python -m roadmap.report ") == 1
    assert report.main([str(tmp_path / "nope"), "--wandb", "disabled"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_wandb_offline_summary_run(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: any network use would fail
    out = report.write_report(sweep, tmp_path / "r", wandb_mode="offline")
    assert (out / "trajectory.csv").is_file()
    runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((sweep / "wandb").iterdir()) if (sweep / "wandb").exists() else "no wandb dir"
    from roadmap.tracking import read_offline_run

    stored = read_offline_run(runs[0])
    assert stored["summary"]["spearman_rho"] == pytest.approx(27 / 28)
    assert stored["summary"]["gain"] == pytest.approx(20.0)
    assert stored["summary"]["trajectory"]["_type"] == "table-file"  # the wandb.Table, one row per step
    assert stored["summary"]["trajectory"]["nrows"] == len(TOP1) + 2
    assert stored["summary"]["trajectory_top1_table"]["_type"] == "table-file"  # the bar chart's (wandb.plot.bar) data
    for stem in ("trajectory", "learning_curves", "cost_accuracy"):  # every figure as an image
        assert stored["summary"][f"{stem}_chart"]["_type"] == "image-file", stem
    assert stored["summary"]["big_steps_of"] == 8 and stored["summary"]["gain_se"] == pytest.approx(0.0)
    assert stored["summary"]["paper_arch_gain"] == pytest.approx(81.97 - 78.82)
    # the report dir does not become a run dir of the next report
    assert {r["step"] for r in report.collect(sweep)} == set(TOP1) | {FAILED, RUNNING}


def test_hydra_callback(sweep: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "runtime": {"cwd": str(tmp_path)},
                                      "overrides": {"task": ["experiment=roadmap_path", "seed=0,1,2"]}},
                            "results_dir": "myresults", "logger": {"name": "none", "mode": "disabled"}})
    report.ReportCallback().on_multirun_end(cfg)
    md = tmp_path / "myresults" / "imagenette-proxy" / "trajectory.md"
    assert md.is_file() and "experiment=roadmap_path seed=0,1,2" in md.read_text()
    # disabled: nothing written
    cfg.results_dir = str(tmp_path / "off")
    report.ReportCallback(enabled=False).on_multirun_end(cfg)
    assert not (tmp_path / "off").exists()
    # never raises: a broken sweep dir is a warning
    cfg.hydra.sweep.dir = str(tmp_path / "does-not-exist")
    with caplog.at_level(logging.WARNING, logger="roadmap"):
        report.ReportCallback().on_multirun_end(cfg)
    assert "report for the sweep failed" in caplog.text


def test_callback_is_registered_in_the_config() -> None:
    from hydra import compose
    from hydra.utils import instantiate

    from roadmap.steps import _isolated_hydra

    with _isolated_hydra():
        cfg = compose(config_name="config", overrides=["hydra.callbacks.report.enabled=false"], return_hydra_config=True)
    node = cfg.hydra.callbacks.report
    assert node._target_ == "roadmap.report.ReportCallback"
    cb = instantiate(node)
    assert isinstance(cb, report.ReportCallback) and cb.enabled is False and cb.metric == "last"
    assert isinstance(instantiate(cfg.hydra.callbacks.keep_runs), report.KeepRunCallback)
    assert cfg.keep_runs is False and "keep_runs" in cfg.hydra.job.config.override_dirname.exclude_keys


def test_sweep_wide_overrides_are_not_variants(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    # every run of the sweep was launched with scale.epochs=1: not a variant
    make_finished(root / "baseline" / "seed0,scale.epochs=1", "baseline", 0, 60.0)
    make_finished(root / "stage_ratio" / "seed0,scale.epochs=1", "stage_ratio", 0, 65.0)
    # a swept model option is: its runs get rows of their own, next to the step
    make_finished(root / "kernel_7" / "seed0,model.depths=[3,3,9,3],scale.epochs=1", "kernel_7", 0, 70.0)
    make_finished(root / "kernel_7" / "seed0,model.kernel_size=9,scale.epochs=1", "kernel_7", 0, 71.0)
    rows = report.collect(root)
    assert [(r["step"], r["variant"]) for r in rows] == [
        ("baseline", ""), ("stage_ratio", ""), ("kernel_7", "model.depths=[3,3,9,3]"), ("kernel_7", "model.kernel_size=9")]
    assert rows[3]["label"] == "kernel sz. → 7 [model.kernel_size=9]" and rows[3]["paper_top1"] is None
    s = report.summarize(rows)
    assert (s["gain"]["from"], s["gain"]["to"]) == ("baseline", "stage_ratio") and s["gain"]["ours"] == 5.0


def test_resnet200_regime_uses_table_11(tmp_path: Path) -> None:
    root = tmp_path / "r200"
    for step, v in (("baseline", 70.0), ("modern_recipe", 72.0)):
        make_finished(root / step / "seed0", step, 0, v, regime="resnet200")
    out = report.write_report(root, wandb_mode="disabled", results_dir=tmp_path / "results")
    assert out.name == "imagenette-proxy-resnet200"  # never overwrites the ResNet-50 trajectory
    rows = {r["step"]: r for r in read_csv(out / "trajectory.csv")}
    t11 = reference()["convnext"]["regimes"]["resnet200"]
    assert float(rows["modern_recipe"]["paper_top1"]) == t11["top1"]["modern_recipe"] == 81.14
    assert float(rows["modern_recipe"]["paper_delta"]) == round(81.14 - 78.20, 4)
    assert float(rows["baseline"]["paper_gflops"]) == t11["gflops"]["baseline"]
    md = (out / "trajectory.md").read_text()
    assert md.startswith("# ResNet-200 → ConvNeXt-B trajectory") and "Table 11" in md


# ---------------------------------------------------------------------------------------------
# Scores the noise can support: big steps (paired Δ, SE, 2 SE, sign), gains, rho; metric last/best
# ---------------------------------------------------------------------------------------------
def test_big_steps_come_from_reference_yaml() -> None:
    big = report.big_steps("resnet50")
    assert [(b["step"], b["vs"], b["paper_delta"]) for b in big] == [
        ("modern_recipe", "baseline", 2.69), ("stage_ratio", "modern_recipe", 0.54),
        ("depthwise_conv", "patchify_stem", -1.23), ("increase_width", "depthwise_conv", 2.22),
        ("move_up_dwconv", "inverted_bottleneck", -0.72), ("kernel_7", "move_up_dwconv", 0.65),
        ("fewer_activations", "gelu", 0.65), ("separate_downsampling", "layer_norm", 0.50)]
    # the list of seven leaves out stage_ratio, although 79.36 - 78.82 = +0.54 >= 0.5;
    # every other main-path step moves by 0.15 or less (patchify, inverting dims, GELU, fewer norms, LN)
    path = [s["name"] for s in reference()["convnext"]["steps"] if not s.get("branch")]
    small = {b: round(PAPER[b] - PAPER[a], 2) for a, b in zip(path, path[1:]) if b not in {x["step"] for x in big}}
    assert small == {"patchify_stem": 0.15, "inverted_bottleneck": 0.14, "gelu": 0.05, "fewer_norms": 0.14,
                     "layer_norm": 0.06}
    assert report.architecture_start("convnext") == "modern_recipe" and report.architecture_start("cmt") is None


# seed -> top-1 of every main-path step; designed so that each kind of big-step outcome occurs
SCORED: Dict[str, Dict[int, float]] = {
    "baseline": {0: 60.0, 1: 61.0, 2: 59.5},
    "modern_recipe": {0: 63.0, 1: 63.5, 2: 62.6},        # +3.0 +2.5 +3.1: agrees, beyond 2 SE
    "stage_ratio": {0: 62.0, 1: 64.5, 2: 62.0},          # -1.0 +1.0 -0.6: disagrees, within 2 SE
    "patchify_stem": {0: 63.0, 1: 64.0, 2: 63.0},
    "depthwise_conv": {0: 61.0, 1: 62.5, 2: 61.2},       # -2.0 -1.5 -1.8: agrees (paper -1.23), beyond
    "increase_width": {0: 61.5, 1: 62.0},                # seed 2 failed; +0.5 -0.5: Δ 0, no sign
    "inverted_bottleneck": {0: 64.0, 1: 65.0, 2: 64.0},
    "move_up_dwconv": {0: 66.0, 1: 67.0, 2: 66.5},       # +2 +2 +2.5: disagrees (paper -0.72), beyond
    "kernel_7": {0: 67.0},                               # one seed: +1.0, agrees, no SE
    "gelu": {0: 66.0, 1: 67.0, 2: 66.0},
    "fewer_activations": {0: 66.5, 1: 67.2, 2: 66.1},    # +0.5 +0.2 +0.1: agrees, just beyond 2 SE
    "fewer_norms": {0: 67.0, 1: 67.0, 2: 67.5},
    "layer_norm": {0: 67.5, 1: 67.8, 2: 67.9},
    "separate_downsampling": {0: 68.0, 1: 68.6, 2: 68.2},  # +0.5 +0.8 +0.3: agrees, beyond
}
EXPECTED_SIGN = {"modern_recipe": True, "stage_ratio": False, "depthwise_conv": True, "increase_width": False,
                 "move_up_dwconv": False, "kernel_7": True, "fewer_activations": True, "separate_downsampling": True}
EXPECTED_BEYOND = {"modern_recipe": True, "stage_ratio": False, "depthwise_conv": True, "increase_width": False,
                   "move_up_dwconv": True, "kernel_7": None, "fewer_activations": True, "separate_downsampling": True}


@pytest.fixture()
def scored(tmp_path: Path) -> Path:
    root = tmp_path / "scored"
    for step, values in SCORED.items():
        for seed, v in values.items():
            make_finished(root / step / f"seed{seed}", step, seed, v)
    make_failed(root / "increase_width" / "seed2", "increase_width")
    return root


def _paired_by_hand(a: Dict[int, float], b: Dict[int, float]):
    import statistics

    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    return statistics.mean(d), se, len(d)


def test_big_step_scores_gains_and_rho_match_hand_computation(scored: Path, tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    out = report.write_report(scored, tmp_path / "r", wandb_mode="disabled")
    s = read_json(out / "summary.json")
    assert s["metric"] == "last" and s["kind"] == "trajectory"
    bs = s["big_steps"]
    assert [b["step"] for b in bs["steps"]] == list(EXPECTED_SIGN)
    for b in bs["steps"]:
        ref = next(x["vs"] for x in report.big_steps() if x["step"] == b["step"])
        delta, se, n = _paired_by_hand(SCORED[b["step"]], SCORED[ref])
        assert b["vs"] == ref and b["n"] == n, b["step"]
        assert b["ours"] == pytest.approx(delta, abs=1e-9), b["step"]
        assert (b["se"] is None) == (se is None) and (se is None or b["se"] == pytest.approx(se)), b["step"]
        assert b["sign_agrees"] is EXPECTED_SIGN[b["step"]], b["step"]
        assert b["beyond_2se"] is EXPECTED_BEYOND[b["step"]], b["step"]
        if se is not None:
            assert b["beyond_2se"] == (abs(delta) > 2 * se)
    assert bs["steps"][3]["n"] == 2 and bs["steps"][3]["ours"] == 0.0  # increase_width: seeds 0, 1 only
    assert (bs["of"], bs["measured"], bs["agree"], bs["agree_beyond_2se"], bs["disagree_beyond_2se"]) == (8, 8, 5, 4, 1)

    arch, gain = s["architecture_gain"], s["gain"]
    assert (arch["from"], arch["to"]) == ("modern_recipe", "separate_downsampling")
    d, se, n = _paired_by_hand(SCORED["separate_downsampling"], SCORED["modern_recipe"])  # 5.0 5.1 5.6
    assert arch["ours"] == pytest.approx(d) and arch["ours_se"] == pytest.approx(se) and arch["n"] == n == 3
    assert arch["paper"] == pytest.approx(81.97 - 78.82) and arch["beyond_2se"] is True
    d, se, n = _paired_by_hand(SCORED["separate_downsampling"], SCORED["baseline"])  # 8.0 7.6 8.7
    assert (gain["from"], gain["to"]) == ("baseline", "separate_downsampling")
    assert gain["ours"] == pytest.approx(d) and gain["ours_se"] == pytest.approx(se)
    assert gain["paper"] == pytest.approx(5.84)

    means = {k: sum(v.values()) / len(v) for k, v in SCORED.items()}
    ref = spearmanr([means[k] for k in SCORED], [PAPER[k] for k in SCORED])
    assert s["spearman"]["steps"] == list(SCORED)
    assert s["spearman"]["rho"] == pytest.approx(ref.statistic) and s["spearman"]["p"] == pytest.approx(ref.pvalue)

    md = (out / "trajectory.md").read_text()
    for needle in ("**5 of 8 signs agree** with the paper, **4 of them beyond 2 SE**; 1 disagree beyond 2 SE",
                   "### Big steps", "| `stage_ratio` | stage ratio | `modern_recipe` | +0.54 | -0.20 ± 0.61 (3) | no | **no** |",
                   "| `kernel_7` | kernel sz. → 7 | `move_up_dwconv` | +0.65 | +1.00 (1) | — | yes |",
                   "**Architecture only**", f"{arch['ours']:+.2f} ± {arch['ours_se']:.2f}", "paper: **+3.15**",
                   "**Metric:** `last`", "The official ConvNeXt code reports the best epoch"):
        assert needle in md, needle
    # the per-step table shows the paired Δ (pairs counted where fewer than the step's seeds)
    rows = {r["step"]: r for r in read_csv(out / "trajectory.csv")}
    assert rows["gelu"]["n_pairs"] == "1" and float(rows["gelu"]["top1_delta_paired"]) == -1.0
    assert rows["gelu"]["top1_delta_paired_se"] == ""
    assert "| -1.00 (1 pair) |" in md


def test_new_seed_range_and_the_spread_check(scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The 95 % range for a new seed (Student's t prediction interval, scipy as the reference) and
    `python -m roadmap.report.spread` on runs with new seeds: inside, outside, refused."""
    import statistics

    from scipy.stats import t

    from roadmap.report import spread

    out = report.write_report(scored, tmp_path / "r", wandb_mode="disabled")
    rows = {r["step"]: r for r in read_csv(out / "trajectory.csv")}
    for step, values in SCORED.items():
        xs = list(values.values())
        if len(xs) < 2:
            assert rows[step]["top1_pi_low"] == rows[step]["top1_pi_high"] == "", step  # one seed: no range
            continue
        half = t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) * math.sqrt(1 + 1 / len(xs))
        m = statistics.mean(xs)
        assert float(rows[step]["top1_pi_low"]) == pytest.approx(m - half, abs=1e-4), step
        assert float(rows[step]["top1_pi_high"]) == pytest.approx(m + half, abs=1e-4), step
    md = (out / "trajectory.md").read_text()
    lo, hi = float(rows["baseline"]["top1_pi_low"]), float(rows["baseline"]["top1_pi_high"])
    assert "new seed, 95 %" in md and f"| {lo:.1f} – {hi:.1f} |" in md  # baseline: 60.17 ± 4.30·0.76·1.15

    new = tmp_path / "rerun"
    make_finished(new / "baseline" / "seed7", "baseline", 7, round(hi - 0.1, 2))         # inside, near the edge
    make_finished(new / "depthwise_conv" / "seed7", "depthwise_conv", 7, 61.5)          # inside
    capsys.readouterr()
    assert spread.main([str(scored), str(new)]) == 0
    text = capsys.readouterr().out
    # what cannot change a result is not compared: where it ran, its sweep, threads, and step-decay
    # milestones under a cosine schedule; a key only one config has (added later) is not compared either
    assert spread.setting_differences(
        {"seed": 0, "sweep_id": "a", "scale": {"threads": None, "epochs": 5}, "recipe": {"sched": "cosine", "decay_milestones": [30, 60, 80]}},
        {"seed": 7, "sweep_id": "b", "scale": {"threads": 1, "epochs": 5, "loader": "cpu"}, "recipe": {"sched": "cosine", "decay_milestones": [30, 60]}}) == []
    assert spread.setting_differences({"model": {"act": "gelu"}}, {"model": {"act": "gelu", "zero_init_last": False}}) == [
        "model.zero_init_last=False but the study's runs have model.zero_init_last=True"]  # LEGACY: older runs had True
    assert spread.setting_differences({"recipe": {"sched": "step", "decay_milestones": [30, 60, 80]}},
                                      {"recipe": {"sched": "step", "decay_milestones": [30, 60]}}) == [
        "recipe.decay_milestones=[30, 60] but the study's runs have recipe.decay_milestones=[30, 60, 80]"]
    assert f"baseline seed 7: top-1 {hi - 0.1:.2f} is inside the 95 % range for a new seed, {lo:.2f} – {hi:.2f}" in text
    assert "2 of 2 inside" in text
    make_finished(new / "gelu" / "seed7", "gelu", 7, 70.0)                              # gelu 66 67 66: outside
    assert spread.main([str(scored), str(new / "gelu" / "seed7")]) == 1
    assert "gelu seed 7: top-1 70.00 is OUTSIDE" in capsys.readouterr().out
    # refused in one line, exit 2: a seed the study used, one seed only, another scale, a failed run
    make_finished(new / "stage_ratio" / "seed1", "stage_ratio", 1, 63.0)
    make_finished(new / "kernel_7" / "seed7", "kernel_7", 7, 67.0)
    make_finished(new / "fewer_norms" / "seed7", "fewer_norms", 7, 67.0, img_size=64)
    make_failed(new / "layer_norm" / "seed7", "layer_norm")
    changed = _config("patchify_stem", 7)  # same scale name, sizes and epochs; another recipe
    changed["recipe"].update(name="classic", epochs=90)
    make_finished(new / "patchify_stem" / "seed7", "patchify_stem", 7, 64.0, config=changed)
    for run, why in (("stage_ratio/seed1", "seed 1 is one of the study's seeds for stage_ratio (0 1 2)"),
                     ("patchify_stem/seed7", "recipe.name='classic' but the study's runs have recipe.name='modern' (and 1 more); "
                                             "a rerun changes the seed only"),
                     ("kernel_7/seed7", "has 1 finished seed(s) of kernel_7; the range needs 2"),
                     ("fewer_norms/seed7", "img_size=64 but the study's runs have img_size=128"),
                     ("layer_norm/seed7", "the run is failed, not finished"),
                     ("nowhere", "holds no run directory")):
        assert spread.main([str(scored), str(new / run)]) == 2, run
        err = capsys.readouterr().err
        assert err.startswith("error: ") and why in err and err.count("\n") == 1, (run, err)


def _history(run_dir: Path, top1: List[Any], loss: List[float]) -> None:
    lines = ["epoch,train_loss,top1"] + [f"{e + 1},{l},{'' if t is None else t}" for e, (t, l) in enumerate(zip(top1, loss))]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")


def test_metric_last_or_best_from_metrics_or_history(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "sweep"
    # baseline: history evaluated every epoch (no top1_best in metrics.json): best 55 at epoch 2
    d = root / "baseline" / "seed0"
    make_finished(d, "baseline", 0, 52.0, epochs_done=3)
    _history(d, [40.0, 55.0, 52.0], [2.0, 1.8, 1.7])
    # modern_recipe: eval_every 2 over 4 epochs; epoch 3 repeats epoch 2's evaluation (not evaluated)
    d = root / "modern_recipe" / "seed0"
    cfg = _config("modern_recipe", 0, epochs=4)
    cfg["scale"]["eval_every"] = 2
    make_finished(d, "modern_recipe", 0, 48.0, config=cfg)
    _history(d, [None, 50.0, 50.0, 48.0], [2.1, 2.0, 1.9, 1.8])
    # stage_ratio: metrics.json records them (what train.py writes from now on): those are used
    d = root / "stage_ratio" / "seed0"
    make_finished(d, "stage_ratio", 0, 47.0, top1_last=47.0, top1_best=61.0, best_epoch=1)
    _history(d, [45.0, 47.0], [2.0, 1.9])

    runs = {r["step"]: r for r in report.collect_runs(root)}
    assert (runs["baseline"]["top1_last"], runs["baseline"]["top1_best"], runs["baseline"]["best_epoch"]) == (52.0, 55.0, 2)
    assert (runs["modern_recipe"]["top1_best"], runs["modern_recipe"]["best_epoch"]) == (50.0, 2)
    assert runs["modern_recipe"]["curves"]["top1"] == [(2, 50.0), (4, 48.0)]
    assert runs["modern_recipe"]["curves"]["train_loss"] == [(1, 2.1), (2, 2.0), (3, 1.9), (4, 1.8)]
    assert (runs["stage_ratio"]["top1_best"], runs["stage_ratio"]["best_epoch"]) == (61.0, 1)

    last = {r["step"]: r["top1_mean"] for r in report.collect(root)}
    best = {r["step"]: r["top1_mean"] for r in report.collect(root, metric="best")}
    assert last == {"baseline": 52.0, "modern_recipe": 48.0, "stage_ratio": 47.0}
    assert best == {"baseline": 55.0, "modern_recipe": 50.0, "stage_ratio": 61.0}
    with pytest.raises(ValueError, match="allowed: last, best"):
        report.collect(root, metric="mean")

    assert report.main([str(root), "--out", str(tmp_path / "b"), "--metric", "best", "--wandb", "disabled"]) == 0
    s = read_json(tmp_path / "b" / "summary.json")
    assert s["metric"] == "best" and "official ConvNeXt" in s["metric_note"]
    assert s["gain"]["ours"] == pytest.approx(61.0 - 55.0)
    md = (tmp_path / "b" / "trajectory.md").read_text()
    assert "**Metric:** `best`" in md and "top-1 (best) mean ± std (n)" in md and "best-evaluated-epoch" in md
    rows = {r["step"]: r for r in read_csv(tmp_path / "b" / "trajectory.csv")}
    assert rows["baseline"]["metric"] == "best" and float(rows["baseline"]["top1_last_mean"]) == 52.0
    assert float(rows["baseline"]["top1_best_mean"]) == 55.0 and float(rows["baseline"]["best_epoch_mean"]) == 2.0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        report.main([str(root), "--metric", "mean"])
    assert "invalid choice: 'mean'" in capsys.readouterr().err


def test_new_figures_are_real_images_listed_in_the_report(scored: Path, tmp_path: Path) -> None:
    from PIL import Image

    for run_dir in scored.glob("*/seed*"):
        if (run_dir / "metrics.json").exists():
            top1 = read_json(run_dir / "metrics.json")["top1"]
            _history(run_dir, [top1 - 10, top1 - 4, top1], [2.2, 1.9, 1.7])
    out = report.write_report(scored, tmp_path / "r", wandb_mode="disabled")
    for stem in ("learning_curves", "cost_accuracy"):
        with Image.open(out / f"{stem}.png") as im:
            w, h = im.size
            assert im.format == "PNG" and w >= 1500 and h >= 800, (stem, im.size)
            assert len(set(im.convert("RGB").resize((64, 64)).getdata())) > 20, stem  # not blank
        svg = (out / f"{stem}.svg").read_text()
        assert "<svg" in svg and ("epoch" if stem == "learning_curves" else "GFLOPs") in svg, stem
    md = (out / "trajectory.md").read_text()
    assert "![learning_curves](learning_curves.png)" in md and "![cost_accuracy](cost_accuracy.png)" in md
    assert read_json(out / "summary.json")["figures"] == ["trajectory.png", "learning_curves.png", "cost_accuracy.png"]


# ---------------------------------------------------------------------------------------------
# Results that accumulate: results/<study>/runs/
# ---------------------------------------------------------------------------------------------
def test_report_rebuilds_from_a_results_study(sweep: Path, tmp_path: Path) -> None:
    study = tmp_path / "results" / "imagenette-proxy"
    kept = [report.keep_run(d, study) for d in report.find_run_dirs(sweep)]
    assert sum(k is not None for k in kept) == 24  # finished runs only: not the failed or running ones
    for k in filter(None, kept):
        assert sorted(p.name for p in k.iterdir()) == ["metrics.json"]  # (these runs have no history/config)
    assert not list(study.rglob("*.pt"))
    assert (study / "runs" / "kernel_9" / "seed2" / "metrics.json").is_file()
    from_sweep = read_csv(report.write_report(sweep, tmp_path / "a", wandb_mode="disabled") / "trajectory.csv")
    out = report.write_report(study, wandb_mode="disabled")  # a study is rebuilt in place
    assert out == study and (study / "trajectory.md").is_file() and (study / "cost_accuracy.svg").is_file()
    rebuilt = {r["step"]: r for r in read_csv(study / "trajectory.csv")}
    for r in from_sweep:
        if r["state"] == "finished":
            for k in ("top1_mean", "top1_std", "n", "seeds", "top1_delta_paired", "top1_delta_paired_se", "gflops_224"):
                assert rebuilt[r["step"]][k] == r[k], (r["step"], k)
    assert set(rebuilt) == set(TOP1)  # the failed/running steps were never kept
    # a second machine adds a seed: the report grows
    make_finished(study / "runs" / "baseline" / "seed3", "baseline", 3, 70.0)
    assert report.main([str(study), "--wandb", "disabled"]) == 0
    base = {r["step"]: r for r in read_csv(study / "trajectory.csv")}["baseline"]
    assert base["n"] == "4" and float(base["top1_mean"]) == 64.0
    # the same runs from the sweep and the study are counted once
    both = {r["step"]: r for r in report.collect([sweep, study])}
    assert both["stage_ratio"]["n"] == 3 and both["baseline"]["n"] == 4
    # the sweep's report into its default folder, the study: it covers the runs kept there too
    out = report.write_report(sweep, wandb_mode="disabled", results_dir=tmp_path / "results")
    assert out == study
    merged = {r["step"]: r for r in read_csv(study / "trajectory.csv")}
    assert merged["baseline"]["n"] == "4" and merged[FAILED]["state"] == "failed"  # the sweep's failures stay visible


def test_keep_run_callback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep_dir = tmp_path / "outputs" / "sweeps" / "kb"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({
        "hydra": {"sweeper": {"params": {"step": "kernel_5,kernel_9,kernel_11"}}, "overrides": {"task": ["seed=0,1"]}},
        "step": "separate_downsampling", "seed": 0, "data": {"name": "imagenette"}, "scale": {"name": "proxy"},
        "regime": {"name": "resnet50"}}))
    run_dir = sweep_dir / "kernel_9" / "seed1"
    make_finished(run_dir, "kernel_9", 1, 70.0)
    (run_dir / "history.csv").write_text("epoch,train_loss,top1\n1,2.0,70.0\n")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_config("kernel_9", 1)))

    def job(keep: Any = True, mode: str = "RunMode.MULTIRUN", out: Path = run_dir):
        return OmegaConf.create({"keep_runs": keep, "results_dir": "res",
                                 "hydra": {"mode": mode, "runtime": {"output_dir": str(out), "cwd": str(tmp_path)},
                                           "sweep": {"dir": "outputs/sweeps/kb"}}})

    cb = report.KeepRunCallback()
    cb.on_job_end(job(keep=False))
    assert not (tmp_path / "res").exists()
    monkeypatch.setenv("RANK", "1")  # torchrun: only rank 0 copies
    cb.on_job_end(job())
    assert not (tmp_path / "res").exists()
    monkeypatch.delenv("RANK")
    cb.on_job_end(job())  # the sweep runs only branches: the study its report gets by default
    kept = tmp_path / "res" / "imagenette-proxy-kernel_branches" / "runs" / "kernel_9" / "seed1"
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "history.csv", "metrics.json"]
    assert (kept / "metrics.json").read_bytes() == (run_dir / "metrics.json").read_bytes()
    # a single run (no sweep) is a study of its own step
    single = tmp_path / "outputs" / "runs" / "imagenette-proxy-resnet50" / "gelu" / "seed0"
    make_finished(single, "gelu", 0, 60.0)
    cb.on_job_end(job(mode="RunMode.RUN", out=single))
    assert (tmp_path / "res" / "imagenette-proxy" / "runs" / "gelu" / "seed0" / "metrics.json").is_file()
    # an unfinished run is not kept; nothing raises
    unfinished = tmp_path / "outputs" / "runs" / "x" / "gelu" / "seed5"
    make_running(unfinished, "gelu", 5)
    cb.on_job_end(job(out=unfinished))
    assert not (tmp_path / "res" / "imagenette-proxy" / "runs" / "gelu" / "seed5").exists()
    # ablations and other roadmaps get their report's study name
    cfg = _config("separate_downsampling", 0, ablation="no_gelu")
    assert report.run_study(cfg) == "imagenette-proxy-ablation"
    assert report.run_study(_config("hybrid_lpu", 0), {"steps": ["separate_downsampling", "hybrid_lpu"]}) == \
        "imagenette-proxy-convnext_to_cmt"
    assert report.run_study({**_config("baseline", 0), "regime": {"name": "resnet200"}}) == "imagenette-proxy-resnet200"
    # a sweep with its own experiment_name (an lr grid, a seed check) is a study of its own; a plain run is not
    for name, study in (("seed_check", "imagenette-proxy-seed_check"), ("adhoc", "imagenette-proxy"),
                        ("kernel_branches", "imagenette-proxy")):
        assert report.run_study({**_config("gelu", 3), "experiment_name": name}) == study, name
    # the study already keeps gelu/seed0 from another sweep: that run is not replaced
    other = tmp_path / "outputs" / "sweeps" / "lr" / "gelu" / "seed0"
    make_finished(other, "gelu", 0, 10.0, config={**_config("gelu", 0), "sweep_id": "lr-imagenette-proxy-resnet50"})
    kept_gelu = tmp_path / "res" / "imagenette-proxy" / "runs" / "gelu" / "seed0"
    assert report.keep_run(other, tmp_path / "res" / "imagenette-proxy") is None
    assert read_json(kept_gelu / "metrics.json")["top1"] == 60.0
    make_finished(single, "gelu", 0, 61.0)  # the same sweep (a rerun that finished again): replaced
    assert report.keep_run(single, tmp_path / "res" / "imagenette-proxy") == kept_gelu
    assert read_json(kept_gelu / "metrics.json")["top1"] == 61.0


def test_keep_runs_is_a_validated_config_key(tmp_path: Path) -> None:
    from roadmap.__main__ import precheck
    from roadmap.config import ConfigError

    precheck(["keep_runs=true", "keep_runs=false"])
    with pytest.raises(ConfigError, match=r"^keep_runs=maybe is invalid; allowed: true, false$"):
        precheck(["keep_runs=maybe"])
    # results/<study>/runs/ is not ignored by git (only a top-level runs/ is)
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "-q", "results/imagenette-proxy/runs/baseline/seed0/metrics.json"],
                         cwd=repo, capture_output=True)
    assert out.returncode == 1, "results/*/runs/ must not be git-ignored"
