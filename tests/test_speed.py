"""The CPU speed levers adopted as defaults (docs/speed.md): bf16 autocast trains like fp32 within
seed noise, channels_last is chosen per model family, and a sweep runs side by side with the cores
split between its runs (hydra/launcher=parallel), never oversubscribed."""
import json
import os
import subprocess
import sys

from roadmap import build_model
from roadmap.steps import compose_config
from roadmap.train import run

# 320 train / 200 val Imagenette images at 64 px, quarter width, 3 epochs of 10 updates (classic recipe)
SHORT = ["scale=smoke", "scale.epochs=3", "scale.eval_every=1", "logger=none", "scale.workers=0", "step=baseline",
         "recipe.zero_init_last=true"]  # the last BN of each block starts at 0: stable from the first update


def _short_run(tmp_path, amp, seed):
    cfg = compose_config([*SHORT, f"scale.amp={amp}", f"seed={seed}", f"data.cache_dir={tmp_path / 'cache'}"])
    m = run(cfg, tmp_path / f"{amp}-{seed}")
    assert m["amp"] == ("bfloat16" if amp == "bf16" else "fp32")
    return m, [float(r["train_loss"]) for r in _history(tmp_path / f"{amp}-{seed}")]


def _history(run_dir):
    import csv

    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_bf16_training_agrees_with_fp32_within_seed_noise(imagenette, tmp_path):
    """Same seeds (same data order, same init), fp32 vs bf16 autocast: the bf16-vs-fp32 difference of each
    seed's loss curve and final top-1 is no larger than what changing the seed does (plus a small floor)."""
    runs = {(amp, s): _short_run(tmp_path, amp, s) for amp in ("none", "bf16") for s in (0, 1)}
    for amp in ("none", "bf16"):  # both learn: the loss falls below chance (ln 10 = 2.303)
        for s in (0, 1):
            losses = runs[(amp, s)][1]
            assert losses[-1] < losses[0] < 2.6, (amp, s, losses)
    loss = {k: v[1][-1] for k, v in runs.items()}
    top1 = {k: v[0]["top1"] for k, v in runs.items()}
    seed_loss = max(abs(loss[(a, 0)] - loss[(a, 1)]) for a in ("none", "bf16"))
    seed_top1 = max(abs(top1[(a, 0)] - top1[(a, 1)]) for a in ("none", "bf16"))
    for s in (0, 1):
        assert abs(loss[("bf16", s)] - loss[("none", s)]) <= 2 * seed_loss + 0.03, (loss, seed_loss)
        assert abs(top1[("bf16", s)] - top1[("none", s)]) <= 2 * seed_top1 + 3.0, (top1, seed_top1)


def test_channels_last_is_chosen_per_model_family(imagenette, tmp_path):
    """CPU, scale.channels_last=auto: NCHW conv + BN blocks train channels_last (1.5-2.5x measured), the
    ConvNeXt blocks that run NHWC inside do not (1.0x); `on` / `off` force it."""
    assert not build_model("baseline").nhwc_blocks and not build_model("fewer_norms").nhwc_blocks
    assert build_model("layer_norm").nhwc_blocks and build_model("separate_downsampling").nhwc_blocks
    tiny = ["scale=smoke", "scale.epochs=1", "scale.max_train_samples=32", "scale.max_val_samples=16", "logger=none",
            "scale.workers=0", f"data.cache_dir={tmp_path / 'cache'}"]
    for step, mode, expect in (("baseline", "auto", True), ("separate_downsampling", "auto", False),
                               ("separate_downsampling", "on", True), ("baseline", "off", False)):
        m = run(compose_config([*tiny, f"step={step}", f"scale.channels_last={mode}"]), tmp_path / f"{step}-{mode}")
        assert m["channels_last"] is expect, (step, mode)


def test_parallel_launcher_splits_the_cores(imagenette, tmp_path):
    """hydra/launcher=parallel: two runs in two processes at once, each with cores // 2 threads (the
    threads each run reports), data-loader workers included; the sweep's report still follows."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, "-m", "roadmap", "-m", "step=baseline,separate_downsampling", "scale=smoke",
           "scale.epochs=1", "scale.max_train_samples=32", "scale.max_val_samples=16", "scale.workers=1", "logger=none",
           "hydra/launcher=parallel", f"out_dir={tmp_path / 'out'}", f"results_dir={tmp_path / 'results'}",
           f"data.cache_dir={tmp_path / 'cache'}", "experiment_name=par"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "out" / "sweeps").glob("par-*/*/*/metrics.json"))
    assert len(runs) == 2
    cores = len(os.sched_getaffinity(0))
    want = max(1, cores // 2)
    for p in runs:
        m = json.loads(p.read_text())
        assert m["device"].endswith(f"{want} threads)"), m["device"]
        log = (p.parent / "train.log").read_text()
        assert "finished" in log
    assert "FutureWarning" not in out.stderr and "jit.script" not in out.stderr
    assert list((tmp_path / "results").glob("*/trajectory.md"))


def test_parallel_launcher_refuses_more_jobs_than_cores(tmp_path):
    n = len(os.sched_getaffinity(0)) + 1
    cmd = [sys.executable, "-m", "roadmap", "-m", "step=baseline", "hydra/launcher=parallel",
           f"hydra.launcher.n_jobs={n}", "logger=none", f"out_dir={tmp_path / 'out'}"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "hydra.launcher.n_jobs" in out.stderr and not (tmp_path / "out").exists()
