"""Sweeps for real (Hydra multirun on Imagenette subsets): failures recorded, reruns do no repeated
work, killed runs resume from their checkpoints, the report marks what happened; the submitit
launcher runs a 2-step sweep on this machine."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roadmap.files import read_json

STEPS = "baseline,patchify_stem,separate_downsampling"
# 96 train / 40 val images, 2 epochs of 3 updates: each run takes a few seconds.
TINY = ["scale=smoke", "scale.max_train_samples=96", "scale.max_val_samples=40", "scale.workers=0", "logger=none"]


def sweep(tmp_path, *args, fault="", timeout=600):
    env = {**os.environ, "ROADMAP_FAULT": fault, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "roadmap", "-m", f"step={STEPS}", *TINY, f"out_dir={tmp_path / 'out'}",
           f"results_dir={tmp_path / 'results'}", f"data.cache_dir={tmp_path / 'cache'}", "experiment_name=t", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def run_dirs(tmp_path):
    root = tmp_path / "out" / "sweeps" / "t-imagenette-smoke-resnet50"
    # the subset overrides make a variant of the smoke scale: seed0,scale.max_train_samples=96,...
    return {step: root / step / "seed0,scale.max_train_samples=96,scale.max_val_samples=40" for step in STEPS.split(",")}


def mtimes(d: Path):
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.is_file()}


def test_sweep_survives_failures_and_reruns_do_no_repeated_work(imagenette, tmp_path):
    dirs = run_dirs(tmp_path)
    # 1. the process is killed after the first epoch of the first step: a checkpoint, no metrics
    out = sweep(tmp_path, fault="exit_after_epoch:1")
    assert out.returncode == 17, out.stderr[-2000:]
    assert (dirs["baseline"] / "last.pt").exists() and not (dirs["baseline"] / "metrics.json").exists()
    assert not dirs["patchify_stem"].exists()

    # 2. rerun with one step failing: the killed step resumes, the failure is recorded, the sweep goes on
    out = sweep(tmp_path, fault="raise:patchify_stem")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed baseline" in (dirs["baseline"] / "train.log").read_text()
    failed = read_json(dirs["patchify_stem"] / "failed.json")
    assert failed["step"] == "patchify_stem" and "injected failure" in failed["reason"]
    assert not (dirs["patchify_stem"] / "metrics.json").exists()
    for step in ("baseline", "separate_downsampling"):
        m = read_json(dirs[step] / "metrics.json")
        assert m["status"] == "finished" and m["epochs_done"] == 2 and m["step"] == step
    # the report, written at the end of the sweep, marks the failure
    report = tmp_path / "results" / "imagenette-smoke-t"  # experiment_name=t: a study of its own
    rows = {r["step"]: r for r in csv.DictReader(open(report / "trajectory.csv"))}
    assert rows["patchify_stem"]["status"].startswith("failed")
    assert rows["baseline"]["status"] == rows["separate_downsampling"]["status"] == "finished"
    assert (report / "trajectory.png").stat().st_size > 10_000 and (report / "trajectory.md").exists()

    # 3. rerun without faults: finished steps are skipped untouched, the failed one is retried
    before = {s: mtimes(dirs[s]) for s in ("baseline", "separate_downsampling")}
    out = sweep(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {s: mtimes(dirs[s]) for s in before} == before
    assert "baseline already finished" in out.stdout + out.stderr
    assert read_json(dirs["patchify_stem"] / "metrics.json")["status"] == "finished"
    assert not (dirs["patchify_stem"] / "failed.json").exists()
    rows = {r["step"]: r for r in csv.DictReader(open(report / "trajectory.csv"))}
    assert all(r["status"] == "finished" for r in rows.values()) and len(rows) == 3


@pytest.mark.slow  # CI time; failures are recorded and reported in test_sweep_survives_failures_and_reruns_do_no_repeated_work
def test_nan_loss_is_a_recorded_failure(imagenette, tmp_path):
    out = sweep(tmp_path, "hydra.callbacks.report.enabled=false", fault="nan:separate_downsampling")
    assert out.returncode == 0, out.stderr[-3000:]
    failed = read_json(run_dirs(tmp_path)["separate_downsampling"] / "failed.json")
    assert "loss" in failed["reason"].lower() and not (run_dirs(tmp_path)["separate_downsampling"] / "metrics.json").exists()
    assert (run_dirs(tmp_path)["baseline"] / "metrics.json").exists()


@pytest.mark.slow  # the same launcher path (submitit's LocalExecutor) runs in test_cluster's requeue test
def test_submitit_local_launcher_runs_a_two_step_sweep(imagenette, tmp_path):
    """The same code path as SLURM (hydra/launcher=slurm): submitit pickles the job, runs it in
    its own process and collects the result. keep_runs=true: each job copies its finished run
    into results/<study>/runs/ from that process, and the report is rebuilt from there alone."""
    from roadmap import report

    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "roadmap", "-m", "hydra/launcher=local", "step=baseline,separate_downsampling",
                          *TINY, f"out_dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'results'}",
                          f"data.cache_dir={tmp_path / 'cache'}", "experiment_name=sub", "hydra.launcher.cpus_per_task=1",
                          "keep_runs=true"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "out" / "sweeps" / "sub-imagenette-smoke-resnet50"
    study = tmp_path / "results" / "imagenette-smoke-sub"
    for step in ("baseline", "separate_downsampling"):
        (run_dir,) = (root / step).glob("seed0*")
        assert read_json(run_dir / "metrics.json")["status"] == "finished"
        kept = study / "runs" / step / run_dir.name
        assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "history.csv", "metrics.json"]
        assert (kept / "history.csv").read_bytes() == (run_dir / "history.csv").read_bytes()
    assert list((root / ".submitit").glob("*/*_result.pkl"))  # submitit really ran the jobs
    assert not list(study.rglob("*.pt"))
    swept = {r["step"]: r for r in csv.DictReader(open(study / "trajectory.csv"))}
    assert report.main([str(study), "--wandb", "disabled"]) == 0  # rebuilt in place from runs/ alone
    rebuilt = {r["step"]: r for r in csv.DictReader(open(study / "trajectory.csv"))}
    assert {s: r["top1_mean"] for s, r in rebuilt.items()} == {s: r["top1_mean"] for s, r in swept.items()}
    assert (study / "learning_curves.png").is_file() and (study / "cost_accuracy.png").is_file()


@pytest.mark.slow  # CI time (~80 s); the CMT models and hybrid steps train in tests/test_cmt.py
def test_convnext_to_cmt_roadmap_runs_at_smoke_scale_with_its_report(imagenette, tmp_path):
    """The hybrid roadmap (issue 6) through the same sweep and report: all 8 steps finish."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "roadmap", "-m", "experiment=convnext_to_cmt", *TINY, "scale.epochs=1",
           f"out_dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'results'}", f"data.cache_dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = list((tmp_path / "results").glob("*/trajectory.csv"))
    assert len(reports) == 1 and reports[0].parent.name.endswith("convnext_to_cmt"), reports
    rows = list(csv.DictReader(open(reports[0])))
    steps = ["separate_downsampling", "hybrid_cmt_stem", "hybrid_lpu", "hybrid_irffn", "hybrid_attn_s34",
             "hybrid_attn_all", "hybrid_rel_pos", "hybrid_cmt_s"]
    assert [r["step"] for r in rows] == steps  # roadmap order
    assert all(r["status"] == "finished" for r in rows)
    flops = {r["step"]: float(r["gflops_224"]) for r in rows}
    assert flops["hybrid_attn_all"] == pytest.approx(6.350, abs=0.002)  # attention matmuls counted
    assert flops["hybrid_cmt_s"] == pytest.approx(4.087, abs=0.002)
