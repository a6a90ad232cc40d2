"""Long runs on real clusters (issue 14), for real: signals sent to real processes (SIGTERM to a
process group, SIGKILL, submitit's SIGUSR2 under the local executor), truncated checkpoint files,
two processes on one run directory, a tiny fake ImageNet in each layout people keep, and the
recipes' values against their sources (torchvision's ResNet-50 reference, the official ConvNeXt).

The interrupted runs are compared with one uninterrupted reference run of the same config:
history.csv and metrics.json (top-1, train loss, EMA) must be equal, not close.
"""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from roadmap.config import ConfigError, validate
from roadmap.data import prepare_cache, scan_folder, scan_imagenet
from roadmap.rundir import (EXIT_PREEMPTED, STOP, CheckpointError, RunLock, RunLocked, StopSignals,
                            load_checkpoint, save_checkpoint)
from roadmap.steps import compose_config
from roadmap.train import Schedule, accumulation, build_optimizer, learning_rate, run, schedule_lengths

# Modern recipe (Mixup/CutMix, RandAugment, random erasing, stochastic depth: every RNG matters),
# EMA on, gradient accumulation 2: 80 train images in 10 steps of 8 = 5 updates per epoch, 2 epochs.
BASE = ["step=separate_downsampling", "scale=smoke", "scale.max_train_samples=80", "scale.max_val_samples=40",
        "scale.batch_size=8", "scale.global_batch=16", "recipe.lr=0.5", "recipe.ema=true", "recipe.ema_decay=0.7",
        "logger=none"]  # lr 0.5 x 16/4096 = 2e-3 and a short EMA: the weights and their EMA move visibly
STEPS = 10
TIMING = {"train_img_s", "train_seconds", "eval_img_s"}  # history columns that measure the machine


def _env(fault=""):
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
            "ROADMAP_FAULT": fault}


def cli(args, cwd, fault="", timeout=1800):
    return subprocess.run([sys.executable, "-m", "roadmap", *args], cwd=cwd, env=_env(fault), capture_output=True,
                          text=True, timeout=timeout)


def start(args, cwd, fault="", **kw):
    log = open(Path(cwd) / f"proc-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "roadmap", *args], cwd=cwd, env=_env(fault), stdout=log,
                            stderr=subprocess.STDOUT, text=True, **kw)
    proc.log = log
    return proc


def output(proc):
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def wait_for(cond, proc=None, timeout=900, what=""):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (exit {proc.returncode}) before {what}:\n{output(proc)[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def read_lock(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or being written
        return None


def run_dir_in(out: Path) -> Path:
    return next(out.glob("runs/*/*/seed0*"))


def read_ck(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # being replaced right now
        return None


def results(run_dir: Path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    return metrics, [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_results(run_dir: Path, reference):
    metrics, rows = results(run_dir)
    ref_metrics, ref_rows = reference
    assert rows == ref_rows  # every epoch: train loss, lr, top-1/5, val loss, EMA top-1/5
    for key in ("top1", "top1_last", "top1_best", "best_epoch", "top5", "val_loss", "train_loss", "ema_top1",
                "ema_val_loss",
                "ema_top1_last", "ema_top1_best", "ema_best_epoch", "epochs_done"):
        assert metrics[key] == ref_metrics[key], key


@pytest.fixture(scope="module")
def work(tmp_path_factory, imagenette):
    d = tmp_path_factory.mktemp("cluster")
    return d, [*BASE, f"data.cache_dir={d / 'cache'}"]


@pytest.fixture(scope="module")
def reference(work):
    """The uninterrupted run every interrupted one must reproduce exactly."""
    d, args = work
    out = cli([*args, f"out_dir={d / 'ref'}"], d)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = run_dir_in(d / "ref")
    metrics, rows = results(run_dir)
    # best-epoch and last-epoch top-1 of both the raw and the EMA weights; one history row per epoch
    assert len(rows) == 2 and [r["epoch"] for r in rows] == ["1", "2"]
    assert metrics["top1"] == metrics["top1_last"] == float(rows[-1]["top1"])
    assert metrics["top1_best"] == max(float(r["top1"]) for r in rows)
    assert float(rows[metrics["best_epoch"] - 1]["top1"]) == metrics["top1_best"]
    assert metrics["ema_top1_last"] == float(rows[-1]["ema_top1"]) and metrics["ema_best_epoch"] in (1, 2)
    assert metrics["ema_top1_best"] == max(float(r["ema_top1"]) for r in rows)
    assert metrics["global_batch"] == 16 and metrics["grad_accum"] == 2
    assert rows[0]["val_loss"] != rows[0]["ema_val_loss"]  # the EMA is not the raw model
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "history.csv", "last.pt", "metrics.json",
                                                         "train.log"]
    return metrics, rows


@pytest.fixture(autouse=True)
def _clear_stop():
    yield
    STOP.signum = None
    STOP.event.clear()


# ------------------------------------------------------------------ preemption by a real signal
def test_sigterm_to_the_process_group_mid_epoch_then_rerun_equals_uninterrupted(work, reference):
    """SIGTERM to the whole process group (as SLURM and Ctrl-C do: the loader workers get it too)
    in the middle of an epoch: the run finishes the update, checkpoints its position inside the
    epoch, logs why, exits 75; rerunning continues to exactly the uninterrupted result."""
    d, args = work
    args = [*args, f"out_dir={d / 'term'}", "scale.workers=2"]
    proc = start(args, d, fault="slow_update:1.5", start_new_session=True)
    run_dir = wait_for(lambda: next((d / "term").glob("runs/*/*/seed0*"), None), proc, what="the run directory")
    wait_for(lambda: (run_dir / "train.log").exists() and "global batch" in (run_dir / "train.log").read_text(),
             proc, what="training to start")
    time.sleep(2.5)  # updates take >= 1.5 s: this lands inside epoch 1
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=900) == EXIT_PREEMPTED, output(proc)[-3000:]
    text = output(proc)
    assert "stopped by SIGTERM in epoch 1/2 after step" in text and "rerun the same command to resume" in text
    assert "stopped by SIGTERM in epoch 1/2 after step" in (run_dir / "train.log").read_text()
    ck = torch.load(run_dir / "last.pt", weights_only=True)
    assert ck["epoch"] == 0 and 0 < ck["step_in_epoch"] < STEPS and ck["step_in_epoch"] % 2 == 0  # an update boundary
    assert ck["num_updates"] == ck["step_in_epoch"] // 2 and len(ck["rng"]) == 1 and ck["ema"] is not None
    assert set(ck["rng"][0]) >= {"python", "numpy", "torch"}
    assert not (run_dir / "failed.json").exists() and not (run_dir / "metrics.json").exists()
    assert not (run_dir / "run.lock").exists()  # released on the way out
    again = cli(args, d)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"+ {ck['step_in_epoch']}/{STEPS} steps of epoch 1" in again.stdout
    assert_same_results(run_dir, reference)


def test_second_process_refused_then_hard_kill_resumes_from_timed_checkpoint(work, reference, tmp_path):
    """Two real processes on one run directory: the second refuses with one line naming the holder
    and writes nothing. Then the first is SIGKILLed in the middle of an epoch (checkpoints every
    update: scale.checkpoint_every_min=0.001) and its newest checkpoint is truncated, as by a copy
    cut short: the rerun takes over the stale lock, falls back to prev.pt, and still reproduces the
    uninterrupted run exactly."""
    d, args = work
    args = [*args, f"out_dir={d / 'kill'}", "scale.workers=0", "scale.checkpoint_every_min=0.001"]
    first = start(args, d, fault="slow_update:6")  # >= 60 s of training: time for the second process to start, even on a loaded 2-core machine
    run_dir = wait_for(lambda: next((d / "kill").glob("runs/*/*/seed0*"), None), first, what="the run directory")
    lock = run_dir / "run.lock"
    holder = wait_for(lambda: read_lock(lock), first, what="the lock")
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    second = cli(args, d)  # the same run, another process
    assert second.returncode == 2, second.stderr[-2000:]
    lines = [l for l in second.stderr.splitlines() if l.strip() and "warn" not in l.lower()]
    assert len(lines) == 1 and f"is in use by host {holder['host']} pid {first.pid} since {holder['since']}" in lines[0]
    assert first.poll() is None  # the holder was not disturbed

    def mid_epoch_with_prev():
        ck = read_ck(run_dir / "last.pt") if (run_dir / "prev.pt").exists() else None
        return ck if ck and ck["step_in_epoch"] > 0 else None

    wait_for(mid_epoch_with_prev, first, what="two checkpoints, the newest inside an epoch")
    first.kill()  # SIGKILL: no handler runs, the lock file stays behind
    first.wait(timeout=60)
    log = (run_dir / "train.log").read_text()
    assert log.count("global batch") == 1 and not (run_dir / "failed.json").exists()  # nothing from the second
    assert json.loads(lock.read_text())["pid"] == first.pid  # a stale lock: its process is dead
    prev = torch.load(run_dir / "prev.pt", weights_only=True)
    if (run_dir / "last.pt").exists():  # (absent if the kill landed between save_checkpoint's two renames)
        os.truncate(run_dir / "last.pt", (run_dir / "last.pt").stat().st_size // 2)

    # none readable: one line that names the files and the choices (in a copy of the run directory)
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    os.truncate(broken / "prev.pt", 100)
    if not (broken / "last.pt").exists():
        (broken / "last.pt").write_bytes(b"")
    (broken / "run.lock").unlink()
    with pytest.raises(CheckpointError) as e:
        run(compose_config([*args, "scale.workers=0"]), broken)
    msg = str(e.value)
    assert "\n" not in msg and "last.pt" in msg and "prev.pt" in msg and f"rm {broken / 'last.pt'}" in msg, msg

    again = cli(args, d)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert f"taking over the stale lock of host {holder['host']} pid {first.pid}" in out
    assert ("last.pt is unreadable" in out or "last.pt is missing" in out) and "resuming from the previous checkpoint" in out
    where = (f"at epoch {prev['epoch']}/2 + {prev['step_in_epoch']}/{STEPS} steps of epoch {prev['epoch'] + 1}"
             if prev["step_in_epoch"] else f"at epoch {prev['epoch']}/2")
    assert where in out
    assert_same_results(run_dir, reference)
    assert not (run_dir / "prev.pt").exists() and not lock.exists()


def test_submitit_requeues_a_preempted_job_which_resumes_exactly(work, reference):
    """hydra/launcher=local is submitit's LocalExecutor (the code path of hydra/launcher=slurm):
    submitit's preemption signal (SIGUSR2) to the job mid-epoch -> our checkpoint, then submitit's
    checkpoint/requeue (the launcher's checkpoint() re-pickles the job) -> the requeued job resumes
    and the sweep ends normally with the uninterrupted result."""
    d, args = work
    sweep = start(["-m", "hydra/launcher=local", *args, f"out_dir={d / 'sub'}", f"results_dir={d / 'res'}",
                   "experiment_name=req", "hydra.launcher.cpus_per_task=1", "hydra.callbacks.report.enabled=false",
                   "scale.workers=0"], d, fault="slow_update:1.0")
    root = d / "sub" / "sweeps" / "req-imagenette-smoke-resnet50" / "separate_downsampling"
    run_dir = wait_for(lambda: next(root.glob("seed0*"), None), sweep, what="the job's run directory")
    lock = run_dir / "run.lock"
    holder = wait_for(lambda: read_lock(lock), sweep, what="the job's lock")
    assert holder["pid"] != sweep.pid  # the job runs in submitit's own process
    # the lock is taken before train.log is opened: wait for the file too
    wait_for(lambda: (run_dir / "train.log").exists() and "global batch" in (run_dir / "train.log").read_text(),
             sweep, what="the job to train")
    t0 = time.monotonic()
    time.sleep(2.0)
    masks = [ln for ln in Path(f"/proc/{holder['pid']}/status").read_text().splitlines() if ln.startswith("Sig")]
    os.kill(holder["pid"], signal.SIGUSR2)
    sent_after = time.monotonic() - t0
    assert sweep.wait(timeout=1800) == 0, output(sweep)[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "stopped by SIGUSR2 in epoch 1/2 after step" in log, (f"SIGUSR2 sent {sent_after:.1f} s after training "
                                                                 f"started; job pid {holder['pid']} {masks}\n{log}")
    assert "resumed separate_downsampling" in log
    job_logs = "".join(p.read_text() for p in (d / "sub").rglob(".submitit/*/*_log.*"))
    assert "stopped by SIGUSR2: requeueing through submitit" in job_logs
    assert "Requeued job" in job_logs  # submitit's own record of the requeue
    assert_same_results(run_dir, reference)


def test_stop_signals_set_a_flag_and_restore_the_previous_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGUSR1)  # a real signal to this process
        assert STOP.event.wait(5) and stop.requested == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before


# ------------------------------------------------------------------ checkpoints and the lock, unit by unit
def test_previous_checkpoint_kept_until_the_next_is_complete(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    real_save = torch.save

    def disk_full(obj, f, *a, **k):  # writes part of the file, then the disk is full
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    state, path = load_checkpoint(tmp_path)
    assert path.name == "last.pt" and state["epoch"] == 1 and not list(tmp_path.glob(".*tmp"))
    save_checkpoint(tmp_path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    assert torch.load(tmp_path / "prev.pt", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2


def test_checkpoint_of_another_config_is_refused(tmp_path):
    from roadmap.train import RunRefused, check_checkpoint_config, identity_config

    cfg = compose_config(BASE)
    ck = {"model": {}, "config": identity_config(cfg)}
    check_checkpoint_config(ck, compose_config([*BASE, "scale.workers=7", "scale.checkpoint_every_min=1"]),
                            tmp_path / "last.pt")  # keys that do not change results
    with pytest.raises(RunRefused, match=r"last\.pt was written under another config \(differs in: model\.kernel_size\)"):
        check_checkpoint_config(ck, compose_config([*BASE, "model.kernel_size=5"]), tmp_path / "last.pt")
    # a run recorded before a key existed resumes only under the value that reproduces it
    old = identity_config(cfg)
    del old["model"]["zero_init_last"], old["recipe"]["zero_init_last"], old["recipe"]["eval_interpolation"]
    check_checkpoint_config({"config": old}, cfg, tmp_path / "last.pt")  # modern recipe: as before
    with pytest.raises(RunRefused, match="zero_init_last"):
        check_checkpoint_config({"config": old}, compose_config([*BASE, "recipe=classic"]), tmp_path / "last.pt")


def test_lock_held_by_a_live_process_and_its_stale_remains(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from roadmap.rundir import RunLock; "
                              f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(600)"],
                             stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"in use by host {socket.gethostname()} pid {child.pid} since "):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    lock = RunLock(tmp_path).acquire()  # the holder died without releasing: taken over
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run.lock").exists()


# ------------------------------------------------------------------ paper scale means ImageNet
def test_paper_scale_on_imagenette_is_refused_with_one_line_and_nothing_written(tmp_path):
    out = cli(["step=separate_downsampling", "scale=paper", "logger=none"], tmp_path)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip() and "warn" not in l.lower()]
    assert len(lines) == 1, out.stderr
    assert "scale=paper trains on ImageNet-1k, not data=imagenette" in lines[0]
    assert "data=imagenet" in lines[0] and "scale.imagenet_only=false" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even Hydra's empty run folders
    validate(compose_config(["scale=paper", "scale.imagenet_only=false"]))  # the explicit override
    validate(compose_config(["scale=paper", "data=imagenet"]))


# ------------------------------------------------------------------ ImageNet layouts (a fake ImageNet written here)
WNIDS = ["n01440764", "n02102040", "n02979186"]  # sorted: class indices 0, 1, 2
DEVKIT_ID = {"n02979186": 1, "n01440764": 2, "n02102040": 3}  # the devkit's own order is not the sorted one
VAL_LABELS = ["n02102040", "n02979186", "n01440764", "n02979186", "n01440764", "n02102040"]


def _jpeg(path: Path, seed: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (48, 56, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def fake_imagenet(root: Path, layout: str) -> Path:
    base = root / "ILSVRC" / "Data" / "CLS-LOC" if layout == "kaggle" else root
    for c, w in enumerate(WNIDS):
        for k in range(4):
            _jpeg(base / "train" / w / f"{w}_{k}.JPEG", 100 * c + k)
    for n, w in enumerate(VAL_LABELS, start=1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        _jpeg(base / "val" / (w if layout == "folder" else "") / name, 1000 + n)
    if layout == "devkit":
        from scipy.io import savemat

        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{DEVKIT_ID[w]}\n" for w in VAL_LABELS))
        rows = [(DEVKIT_ID[w], w, f"class {w}", "", 0, 0, 4) for w in WNIDS] + [(1001, "n00001740", "entity", "", 3, 19, 0)]
        synsets = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
                                        ("num_children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")])
        savemat(str(data / "meta.mat"), {"synsets": synsets})
    if layout == "kaggle":
        with open(root / "LOC_val_solution.csv", "w") as f:
            f.write("ImageId,PredictionString\n")
            for n, w in enumerate(VAL_LABELS, start=1):
                f.write(f"ILSVRC2012_val_{n:08d},{w} 1 2 30 40 {w} 5 6 20 20 \n")
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {w}\n" for w in WNIDS))
    return root


@pytest.mark.parametrize("layout", ["folder", "devkit", "kaggle"])
def test_fake_imagenet_in_each_layout_gives_the_same_labels(layout, tmp_path):
    root = fake_imagenet(tmp_path / layout, layout)
    data = compose_config(["data=imagenet", f"data.root={root}"]).data
    classes, samples = scan_imagenet(data, root, "val")
    assert classes == WNIDS
    assert {Path(p).name: y for p, y in samples} == \
        {f"ILSVRC2012_val_{n:08d}.JPEG": WNIDS.index(w) for n, w in enumerate(VAL_LABELS, start=1)}
    train_classes, train = scan_imagenet(data, root, "train")
    assert train_classes == WNIDS and len(train) == 12


def test_fake_imagenet_trains_through_run_and_missing_labels_are_one_line(tmp_path):
    common = ["step=patchify_stem", "data=imagenet", "data.num_classes=3", "scale=smoke", "scale.max_train_samples=null",
              "scale.max_val_samples=null", "scale.batch_size=4", "scale.epochs=1", "scale.workers=0", "logger=none",
              f"data.cache_dir={tmp_path / 'cache'}"]
    for layout, cache in (("kaggle", "true"), ("devkit", "false")):
        root = fake_imagenet(tmp_path / layout, layout)
        metrics = run(compose_config([*common, f"data.root={root}", f"data.cache={cache}"]), tmp_path / f"run-{layout}")
        assert metrics["train_images"] == 12 and metrics["val_images"] == 6 and metrics["data"]["classes"] == 3
    (tmp_path / "kaggle" / "LOC_val_solution.csv").unlink()
    with pytest.raises(ConfigError) as e:
        scan_imagenet(compose_config(["data=imagenet"]).data, tmp_path / "kaggle", "val")
    assert "\n" not in str(e.value) and "LOC_val_solution.csv" in str(e.value) and "data.val_labels" in str(e.value)


# ------------------------------------------------------------------ recipes as their sources define them
def test_classic_recipe_is_torchvisions_and_modern_is_the_official_convnext():
    import timm
    import torchvision

    from roadmap.data import build_transforms
    from roadmap.model import build_model

    classic = compose_config(["step=baseline", "scale=paper", "data=imagenet"])
    modern = compose_config(["step=modern_recipe", "scale=paper", "data=imagenet"])
    # torchvision references/classification, ResNet-50: lr 0.1 per 256, x0.1 every 30 epochs of 90
    assert list(classic.recipe.decay_milestones) == [30, 60] and classic.recipe.epochs == 90
    model = build_model("baseline", width_mult=0.25)
    opt = build_optimizer(model, classic.recipe, learning_rate(classic.recipe, classic.scale, 256))
    sched = Schedule(opt, classic.recipe, schedule_lengths(classic, 10))
    for epoch, want in ((0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 1e-3), (80, 1e-3), (89, 1e-3)):
        sched.step(epoch * 10)
        assert opt.param_groups[0]["lr"] == pytest.approx(want), epoch
    # last BN of each block: 1 as torchvision's resnet50 (classic), 0 as timm's resnet50 (modern)
    tv = torchvision.models.resnet50()
    assert tv.layer1[0].bn3.weight.detach().eq(1).all()
    assert timm.create_model("resnet50").layer1[0].bn3.weight.detach().eq(0).all()
    classic_model = build_model("baseline")
    assert classic_model.cfg.zero_init_last is False and classic.model.zero_init_last is False
    assert classic_model.stages[0].blocks[0].norm_out.weight.detach().eq(1).all()
    assert build_model("modern_recipe").stages[0].blocks[0].norm_out.weight.detach().eq(0).all()
    # evaluation resize: bilinear (torchvision) / bicubic (official ConvNeXt), 256 -> 224 both
    _, v_classic = build_transforms(classic.recipe, 224, 224)
    _, v_modern = build_transforms(modern.recipe, 224, 224)
    assert "bilinear" in str(v_classic.transforms[0]).lower() and "256" in str(v_classic.transforms[0])
    assert "bicubic" in str(v_modern.transforms[0]).lower() and "224" in str(v_modern.transforms[1])
    # EMA as the official ConvNeXt-T command (--model_ema true: decay 0.9999), off for the roadmap
    assert modern.recipe.ema is False and modern.recipe.ema_decay == 0.9999
    # the paper's global batches, exact
    assert accumulation(modern.scale.global_batch, 128, 8) == (4096, 4)
    assert accumulation(classic.scale.global_batch, 128, 2) == (256, 1)
    assert learning_rate(modern.recipe, modern.scale, 4096) == pytest.approx(4e-3)


def test_global_batch_is_exact_or_refused_with_one_line():
    assert accumulation(None, 32, 3) == (96, 1)  # no target: what the updates see
    assert accumulation(4096, 128, 4) == (4096, 8)
    with pytest.raises(ConfigError) as e:
        accumulation(4096, 128, 6)  # 4096 / 768 is not whole: rounding down would train at 3840
    msg = str(e.value)
    assert "\n" not in msg and "scale.global_batch=4096" in msg and "128 x 6 processes = 768" in msg
    assert "scale.global_batch=3840 or 4608" in msg
    with pytest.raises(ConfigError, match=r"e\.g\. scale\.batch_size=64 \(8 accumulation steps\)"):
        accumulation(4096, 96, 8)


def test_eval_cache_follows_the_recipe_interpolation(tmp_path):
    src = tmp_path / "src" / "val" / "c0"
    _jpeg(src / "a.JPEG", 1)
    _jpeg(src / "b.JPEG", 2)
    for interp, mode in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
        ds, info = prepare_cache("t", "val", src.parent, 40, tmp_path / "cache", interpolation=interp, workers=1)
        assert (interp == "bilinear") == ("bilinear" in info.path.name)
        img = Image.open(src / "a.JPEG").convert("RGB")
        w, h = img.size
        want = img.resize((round(w * 40 / h), 40), mode)
        left = (want.size[0] - 40) // 2
        assert np.array_equal(np.asarray(ds[0][0]), np.asarray(want.crop((left, 0, left + 40, 40))))
    assert scan_folder(src.parent)[0] == ["c0"]
