"""Training for real on Imagenette subsets: outputs, resume, DDP, W&B, recipes, bad input."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from roadmap.config import ConfigError
from roadmap.steps import compose_config
from roadmap.tracking import read_offline_run
from roadmap.train import (RunRefused, Schedule, build_mixup_and_loss, build_optimizer, learning_rate, run,
                           schedule_lengths)

REPO = Path(__file__).resolve().parent.parent
# Tiny real-data setting: 160 train / 80 val images, 2 epochs of 5 steps, quarter width, 64 px.
TINY = ["scale=smoke", "scale.max_train_samples=160", "scale.max_val_samples=80", "logger=none", "scale.workers=0"]


def cfg_for(tmp_path, *overrides):
    cfg = compose_config([*TINY, f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    return cfg


def cli(args, tmp_path, env_extra=None, check=True, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env_extra or {})}
    out = subprocess.run([sys.executable, "-m", "roadmap", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("step", ["baseline", "separate_downsampling"])
def test_real_training_writes_valid_metrics(step, tmp_path, imagenette):
    cfg = cfg_for(tmp_path, f"step={step}")
    metrics = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["top1"] == metrics["top1"] and 0 <= saved["top1"] <= 100 and saved["top5"] >= saved["top1"]
    assert saved["epochs_done"] == 2 and saved["val_images"] == 80 and saved["train_images"] == 160
    assert saved["params"] > 0 and 0 < saved["gflops"] < saved["gflops_224"]
    assert saved["gflops_224"] == pytest.approx({"baseline": 4.11, "separate_downsampling": 4.47}[step], abs=0.01)
    assert saved["train_img_s"] > 0 and saved["eval_img_s"] > 0 and saved["peak_memory_mb"] > 0
    assert saved["config"]["step"] == step and saved["seed"] == 0 and saved["torch"] == torch.__version__
    assert saved["config"]["recipe"]["name"] == ("classic" if step == "baseline" else "modern")
    assert math.isfinite(saved["train_loss"]) and saved["skipped_files"] == 0
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[0].startswith("epoch,train_loss")
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and set(ck) >= {"model", "optimizer", "scheduler", "rng", "num_updates"}
    assert not list((tmp_path / "run").glob(".*tmp*"))  # atomic writes leave no temp files
    # a finished run is not repeated
    again = run(cfg, tmp_path / "run")
    assert again["finished_at"] == saved["finished_at"]


def test_loss_decreases_on_a_fixed_batch(imagenette, tmp_path):
    from roadmap.data import build_data
    from roadmap.model import ModernizableResNet

    cfg = cfg_for(tmp_path, "step=separate_downsampling", "recipe=classic")
    torch.manual_seed(0)
    data = build_data(cfg)
    x, y = next(iter(data.train))
    model = ModernizableResNet(cfg.model)
    opt = build_optimizer(model, cfg.recipe, 0.05)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow  # CI time (~60 s); tests/test_cluster.py kills runs mid-epoch (SIGTERM, SIGKILL) and checks the same equality
def test_interrupted_then_resumed_equals_uninterrupted(imagenette, tmp_path):
    """Kill a run after its first epoch's checkpoint, rerun the same command: same numbers."""
    args = [*TINY, "step=separate_downsampling", f"data.cache_dir={tmp_path / 'cache'}", "scale.workers=2"]
    # modern recipe: Mixup/CutMix, RandAugment, random erasing, stochastic depth all draw randomness
    cli([*args, "out_dir=full"], tmp_path)
    killed = cli([*args, "out_dir=resumed"], tmp_path, {"ROADMAP_FAULT": "exit_after_epoch:1"}, check=False)
    assert killed.returncode == 17
    run_dir = next((tmp_path / "resumed").glob("runs/*/*/seed0*"))
    assert (run_dir / "last.pt").exists() and not (run_dir / "metrics.json").exists()
    out = cli([*args, "out_dir=resumed"], tmp_path)
    assert "resumed separate_downsampling" in out.stdout
    full = json.loads(next((tmp_path / "full").glob("runs/*/*/seed0*/metrics.json")).read_text())
    resumed = json.loads((run_dir / "metrics.json").read_text())
    for key in ("top1", "top5", "val_loss", "train_loss", "epochs_done"):
        assert resumed[key] == full[key], key
    h_full = (next((tmp_path / "full").glob("runs/*/*/seed0*")) / "history.csv").read_text().splitlines()
    h_res = (run_dir / "history.csv").read_text().splitlines()
    col = h_full[0].split(",").index("train_loss")
    assert [r.split(",")[col] for r in h_full[1:]] == [r.split(",")[col] for r in h_res[1:]]


def test_ddp_two_gloo_processes(imagenette, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    args = [*TINY, "step=inverted_bottleneck", f"data.cache_dir={tmp_path / 'cache'}", "out_dir=ddp"]
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "roadmap", *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = next((tmp_path / "ddp").glob("runs/*/*/seed0*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 64
    # only rank 0 writes: exactly one set of files, one log, no per-rank leftovers
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "history.csv", "last.pt", "metrics.json", "train.log"]
    assert out.stdout.count("metrics: ") == 1
    # every validation image counted once across the two ranks (no padding duplicates)
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert [r.split(",")[rows[0].split(",").index("val_n")] for r in rows[1:]] == ["80", "80"]


def test_wandb_offline_run_has_the_summary(imagenette, tmp_path):
    cfg = cfg_for(tmp_path, "step=patchify_stem", "logger=wandb", "logger.mode=offline", "seed=3")
    metrics = run(cfg, tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    stored = read_offline_run(runs[0], history=True)  # what `wandb sync` would upload (read by wandb-core)
    summary, config = stored["summary"], stored["config"]
    assert summary["top1"] == pytest.approx(metrics["top1"]) and summary["params"] == metrics["params"]
    assert summary["gflops_224"] == pytest.approx(metrics["gflops_224"])
    assert summary["paper_top1"] == 79.51 and summary["paper_gflops"] == pytest.approx(4.42, abs=0.01)  # Table 10
    assert config["step"] == "patchify_stem" and config["step_index"] == 3 and config["seed"] == 3
    assert config["roadmap_step"] == "003-patchify_stem" and config["model"]["stem"] == "patchify"
    assert stored["run"]["state"] == "finished" and stored["run"]["job_type"] == "path"
    # one history row per epoch, W&B's step = the epoch, the same numbers as history.csv
    assert [h["_step"] for h in stored["history"]] == [1, 2] == [h["epoch"] for h in stored["history"]]
    assert stored["history"][-1]["top1"] == pytest.approx(metrics["top1"])


def test_recipes_build_what_they_name(tmp_path):
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.loss import SoftTargetCrossEntropy

    from roadmap.data import build_transforms
    from roadmap.model import ModernizableResNet

    modern = compose_config(["step=separate_downsampling", "scale=paper"])
    classic = compose_config(["step=baseline", "scale=paper"])
    # learning rate: per 4096 (modern) / per 256 (classic) images, linear in the global batch
    assert learning_rate(modern.recipe, modern.scale, 4096) == pytest.approx(4e-3)
    assert learning_rate(modern.recipe, modern.scale, 1024) == pytest.approx(1e-3)
    assert learning_rate(classic.recipe, classic.scale, 256) == pytest.approx(0.1)
    assert OmegaConf.select(modern, "scale.global_batch") == 4096 and classic.scale.global_batch == 256
    model = ModernizableResNet(modern.model)
    opt = build_optimizer(model, modern.recipe, 4e-3)
    assert type(opt).__name__ == "AdamW" and opt.defaults["betas"] == (0.9, 0.999)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    for name, p in model.named_parameters():  # no decay on norms, biases, layer-scale gammas
        assert (id(p) in decay) == (p.ndim > 1), name
    assert modern.model.drop_path_rate == 0.1 and modern.model.layer_scale == 1e-6
    copt = build_optimizer(ModernizableResNet(classic.model), classic.recipe, 0.1)
    assert type(copt).__name__ == "SGD" and copt.defaults["momentum"] == 0.9 and not copt.defaults["nesterov"]
    assert all(g["weight_decay"] == 1e-4 for g in copt.param_groups)
    # schedules: 20 warmup epochs then cosine (modern); x0.1 at 30/60 (classic, torchvision's); per update
    sched = Schedule(opt, modern.recipe, schedule_lengths(modern, 10))
    lrs = []
    for t in range(0, 3000 + 1, 100):
        sched.step(t)
        lrs.append(opt.param_groups[0]["lr"])
    assert sched.warmup == 200 and sched.total == 3000
    assert lrs[0] == pytest.approx(1e-6) and lrs[2] == pytest.approx(4e-3, rel=1e-3) and lrs[-1] < 1e-5
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    csched = Schedule(copt, classic.recipe, schedule_lengths(classic, 10))
    for t, want in ((0, 0.1), (299, 0.1), (300, 0.01), (600, 1e-3), (800, 1e-3), (899, 1e-3)):
        csched.step(t)
        assert copt.param_groups[0]["lr"] == pytest.approx(want), t
    # augmentation and loss
    t_modern, v_modern = build_transforms(modern.recipe, 224, 224)
    ra = [t for t in t_modern.transforms if isinstance(t, RandAugment)]
    assert ra and ra[0].num_layers == 2 and ra[0].ops[0].magnitude == 9 and ra[0].ops[0].magnitude_std == 0.5
    assert "Increasing" in "".join(op.name for op in ra[0].ops)
    re = [t for t in t_modern.transforms if isinstance(t, RandomErasing)]
    assert re and re[0].probability == 0.25
    rrc = t_modern.transforms[0]
    assert "bicubic" in str(rrc.interpolation).lower()
    assert "256" in str(v_modern.transforms[0]) and "224" in str(v_modern.transforms[1])  # 256 -> 224 (0.875)
    mixup, loss = build_mixup_and_loss(modern.recipe, 10)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.switch_prob, mixup.label_smoothing) == (0.8, 1.0, 0.5, 0.1)
    assert isinstance(loss, SoftTargetCrossEntropy)
    t_classic, _ = build_transforms(classic.recipe, 224, 224)
    assert not [t for t in t_classic.transforms if isinstance(t, (RandAugment, RandomErasing))]
    assert "bilinear" in str(t_classic.transforms[0].interpolation).lower()
    cm, closs = build_mixup_and_loss(classic.recipe, 10)
    assert cm is None and isinstance(closs, torch.nn.CrossEntropyLoss)
    assert classic.model.drop_path_rate == 0.0


def test_scale_augment_off_trains_without_the_recipes_augmentation(imagenette, tmp_path):
    """scale.augment=off (scale=quick): a real modern-recipe run records the recipe it trained with --
    no RandAugment, Mixup/CutMix or random erasing; label smoothing, stochastic depth, optimizer and
    schedule untouched -- and the loaders and loss built from that recipe have none of them."""
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.loss import LabelSmoothingCrossEntropy

    from roadmap.data import build_transforms

    cfg = cfg_for(tmp_path, "step=modern_recipe", "scale.augment=off", "scale.epochs=1",
                  "scale.max_train_samples=32", "scale.max_val_samples=16")
    m = run(cfg, tmp_path / "off")
    saved = OmegaConf.load(tmp_path / "off" / "config.yaml")
    for rec in (saved.recipe, m["config"]["recipe"]):
        assert (rec["auto_augment"], rec["mixup"], rec["cutmix"], rec["reprob"]) == (None, 0.0, 0.0, 0.0)
        assert (rec["name"], rec["smoothing"], rec["opt"], rec["sched"]) == ("modern", 0.1, "adamw", "cosine")
    assert saved.scale.augment == "off" and saved.model.drop_path_rate == 0.1
    train_tf, _ = build_transforms(saved.recipe, 48, 64)
    assert not [t for t in train_tf.transforms if isinstance(t, (RandAugment, RandomErasing))]
    mixup, loss = build_mixup_and_loss(saved.recipe, 10)
    assert mixup is None and isinstance(loss, LabelSmoothingCrossEntropy)
    # the default keeps the recipe as it is
    full = cfg_for(tmp_path, "step=modern_recipe")
    assert full.scale.augment == "recipe" and full.recipe.mixup == 0.8
    # the default job's scale turns it off
    assert compose_config(["step=modern_recipe", "scale=quick"]).scale.augment == "off"


# ------------------------------------------------------------------ bad input: one line, exit != 0
@pytest.mark.parametrize("args,needle", [
    (["step=resnet_9000"], "step='resnet_9000' is unknown; allowed: baseline"),
    (["data=mnist"], "data='mnist' is unknown; allowed:"),
    (["model.kernal_size=7"], "model.kernal_size is not an option"),
    (["model.kernel_size=4"], "model.kernel_size=4 is invalid"),
    (["model.norm_type=gn"], "model.norm_type='gn' is invalid; allowed: bn, ln"),
    (["scale.augment=light"], "scale.augment='light' is invalid; allowed: recipe, off"),
    (["data=imagefolder", "data.root=/nonexistent/folder"], "does not exist"),
])
def test_bad_input_fails_with_one_line(args, needle, tmp_path):
    out = cli([*args, "logger=none"], tmp_path, check=False)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.strip().splitlines() if l.strip() and "Warning" not in l and "warnings.warn" not in l]
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))


def test_folder_without_images_is_refused(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "empty" / split / "classA").mkdir(parents=True)
    cfg = cfg_for(tmp_path, "data=imagefolder", f"data.root={tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="no images in"):
        run(cfg, tmp_path / "run")


def test_existing_run_dir_with_another_config_is_refused(imagenette, tmp_path):
    run(cfg_for(tmp_path, "step=patchify_stem", "scale.epochs=1"), tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    with pytest.raises(RunRefused, match="differs in: .*model.kernel_size"):
        run(cfg_for(tmp_path, "step=patchify_stem", "scale.epochs=1", "model.kernel_size=5"), tmp_path / "run")
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}  # nothing overwritten
    out = cli([*TINY, "step=patchify_stem", "scale.epochs=1", f"data.cache_dir={tmp_path / 'cache'}",
               f"hydra.run.dir={tmp_path / 'run'}", "model.kernel_size=5"], tmp_path, check=False)
    assert out.returncode == 2 and "holds a run with another config" in out.stderr


def test_num_classes_mismatch_with_checkpoint(imagenette, tmp_path):
    from roadmap import build_model

    torch.save(build_model("patchify_stem", num_classes=1000, width_mult=0.25).state_dict(), tmp_path / "w.pt")
    cfg = cfg_for(tmp_path, "step=patchify_stem", f"init_from={tmp_path / 'w.pt'}")
    with pytest.raises(ConfigError, match=r"head.fc.weight is \(1000, .*\) there, \(10, .*classes"):
        run(cfg, tmp_path / "run")
