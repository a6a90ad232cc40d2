"""`python -m roadmap.timm_command` (issue 33): the timm train.py command of a run, no training.

* every flag printed exists in train.py at the stored commit (roadmap/timm_train_flags.txt), for every
  main-path step at proxy64 and at paper (8 processes, torchrun), both regimes' names;
* the printed values, read back with train.py's parser rebuilt from that list (its -c file applied as
  train.py applies it), equal our resolved config's, computed here from the config itself: lr after the
  batch scaling and lr_mult, weight decay, betas / momentum, epochs and warm-up (prefix or not), the
  step milestones, Mixup/CutMix, RandAugment, erasing, smoothing, drop path, EMA, batch, sizes, seed;
* one-line errors: a typo, a global batch the processes cannot split, an end-only option;
* timm's own networks of the ends, and the measured stem difference of its ResNet;
* `python -m roadmap.timm_train` runs a script as train.py would be run, with the steps registered.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from roadmap.config import ConfigError
from roadmap.steps import MAIN_PATH
from roadmap.timm_command import (Target, build, main, parse_command, render, resolve_config, timm_flags,
                                  timm_parser, timm_source)

REPO = Path(__file__).resolve().parent.parent
PAPER = ["scale=paper", "data=imagenet", "data.root=/data/imagenet"]


def printed(overrides, **target):
    cfg = resolve_config(overrides)
    return cfg, render(build(cfg, Target(**target)))


def printed_options(text: str):
    command = text.split("roadmap.timm_train", 1)[1].split("\n# Not expressible")[0]
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", command))


def expected(cfg, gpus: int):
    """What train.py must end up with, from our config alone (not from the mapping under test)."""
    r, s = cfg.recipe, cfg.scale
    global_batch = s.global_batch or s.batch_size * gpus
    ratio = global_batch / r.lr_base_batch
    lr = r.lr * (ratio if s.lr_scaling == "linear" else math.sqrt(ratio)) * float((s.lr_mult or {}).get(r.name, 1.0))
    epochs = s.epochs or r.epochs
    return {"lr": lr, "weight_decay": r.weight_decay, "epochs": epochs, "warmup": r.warmup_epochs * epochs / r.epochs,
            "milestones": [m * epochs / r.epochs for m in r.decay_milestones], "global_batch": global_batch}


def check_round_trip(cfg, ns, gpus: int) -> None:
    e, r = expected(cfg, gpus), cfg.recipe
    assert math.isclose(ns["lr"], e["lr"], rel_tol=1e-12)
    assert ns["weight_decay"] == r.weight_decay and ns["sched_on_updates"] is True
    assert ns["batch_size"] * gpus * ns["grad_accum_steps"] == e["global_batch"]
    total = ns["epochs"] + (ns["warmup_epochs"] if ns["warmup_prefix"] else 0)
    assert total == e["epochs"] and math.isclose(ns["warmup_epochs"], e["warmup"], abs_tol=1e-12)
    if r.sched == "cosine":
        assert ns["sched"] == "cosine" and ns["warmup_prefix"] == (e["warmup"] > 0 and float(e["warmup"]).is_integer())
    else:
        assert ns["sched"] == "multistep" and ns["decay_rate"] == r.decay_rate
        assert all(math.isclose(a, b) for a, b in zip(ns["decay_milestones"], e["milestones"]))
    assert (ns["warmup_lr"], ns["min_lr"]) == (r.warmup_lr, r.min_lr)
    if r.opt == "adamw":
        assert (ns["opt"], ns["opt_betas"]) == ("adamw", list(r.betas))
    else:  # torchvision's plain momentum, not timm's Nesterov 'sgd'
        assert (ns["opt"], ns["momentum"]) == ("momentum", r.momentum)
    assert ns["opt_kwargs"] == ({} if r.no_wd_norm_bias else {"filter_bias_and_bn": False})
    for ours, theirs in (("mixup", "mixup"), ("cutmix", "cutmix"), ("mixup_prob", "mixup_prob"), ("reprob", "reprob"),
                         ("mixup_switch_prob", "mixup_switch_prob"), ("smoothing", "smoothing"),
                         ("train_interpolation", "train_interpolation"), ("eval_interpolation", "interpolation"),
                         ("crop_pct", "crop_pct"), ("auto_augment", "aa"), ("ema", "model_ema")):
        assert ns[theirs] == r[ours], ours
    assert ns["drop_path"] == cfg.model.drop_path_rate and ns["color_jitter"] == 0.0 and ns["no_prefetcher"]
    assert (ns["img_size"], ns["num_classes"], ns["seed"]) == (cfg.scale.img_size, cfg.data.num_classes, cfg.seed)
    prefix = "roadmap200" if cfg.regime.name == "resnet200" else "roadmap"
    assert ns["model"] == f"{prefix}_{cfg.step}"
    assert ns["model_kwargs"] == ({"width_mult": cfg.scale.width_mult} if cfg.scale.width_mult != 1 else {})


def test_flags_file_names_its_commit():
    src = timm_source()
    assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]) and src["version"].startswith("1.0.")
    flags = timm_flags()
    assert len(flags) > 150 and flags["warmup_epochs"].type == "int" and flags["lr"].type == "float"
    with pytest.raises(SystemExit):  # why fractional values go through -c: argparse refuses them
        timm_parser().parse_args(["--warmup-epochs", "0.5"])


@pytest.mark.parametrize("step", MAIN_PATH)
def test_every_main_path_step_at_proxy64(step):
    cfg, text = printed([f"step={step}", "scale=proxy64"], device="cpu")
    options = {o for f in timm_flags().values() for o in f.options}
    assert printed_options(text) <= options, printed_options(text) - options
    check_round_trip(cfg, parse_command(text), gpus=1)
    assert f"{timm_source()['commit']}" in text and "\n# Not expressible" in text


@pytest.mark.parametrize("step", MAIN_PATH)
def test_every_main_path_step_at_paper_with_torchrun(step):
    gpus = 2 if step == "baseline" else 8  # the classic recipe's 256 images split over 2 x 128, the modern 4096 over 8
    cfg, text = printed([f"step={step}", *PAPER], gpus=gpus)
    options = {o for f in timm_flags().values() for o in f.options}
    assert printed_options(text) <= options, printed_options(text) - options
    assert f"torchrun --nproc_per_node={gpus} -m roadmap.timm_train" in text
    ns = parse_command(text)
    check_round_trip(cfg, ns, gpus=gpus)
    assert ns["batch_size"] == 128 and ns["grad_accum_steps"] == cfg.recipe.lr_base_batch // (128 * gpus)


def test_classic_recipe_step_schedule_and_regimes():
    cfg, text = printed(["step=baseline", "scale=proxy64", "regime=resnet200"])
    ns = parse_command(text)
    check_round_trip(cfg, ns, gpus=1)
    assert ns["decay_milestones"] == pytest.approx([5 / 3, 10 / 3]) and "decay_milestones: [" in text
    assert "one update earlier" in text
    cfg, text = printed(["step=baseline", *PAPER], gpus=2)  # 256 = 128 x 2 processes: one update per step
    check_round_trip(cfg, parse_command(text), gpus=2)
    assert "-c " not in text.split("# Not expressible")[0].split("roadmap.timm_train")[1]  # whole epochs: flags only
    cfg, text = printed(["step=separate_downsampling", *PAPER], gpus=8)
    ns = parse_command(text)
    assert (ns["epochs"], ns["warmup_epochs"], ns["warmup_prefix"]) == (280, 20, True)  # exactly ours


def test_one_line_errors(capsys):
    for argv, words in ((["step=modern_recipe", "recipe.lrr=1"], "recipe.lrr"),
                        (["step=kernel_77"], "step='kernel_77'"),
                        (["step=baseline", *PAPER, "--gpus", "8"], "scale.global_batch=256"),
                        (["step=kernel_7", "scale=proxy64", "--timm-model"], "--timm-model"),
                        (["step=baseline", "scale=proxy64", "--", "--no-such-flag"], "--no-such-flag")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, err


def test_timm_own_networks_of_the_ends():
    cfg, text = printed(["step=separate_downsampling", "scale=proxy64"], timm_model=True)
    ns = parse_command(text)
    assert ns["model"] == "convnext_tiny" and ns["model_kwargs"] == {"dims": [24, 48, 96, 192]}
    cfg, text = printed(["step=modern_recipe", "scale=proxy64"], timm_model=True)
    ns = parse_command(text)
    assert ns["model"] == "resnet50" and ns["model_kwargs"] == {"channels": [16, 32, 64, 128]}
    m = re.search(r"([\d,]+) parameters against our ([\d,]+)", text)
    theirs, ours = (int(g.replace(",", "")) for g in m.groups())
    assert (theirs, ours) == (1492874, 1486106)  # ours: the committed proxy64 runs' params
    assert "no projection shortcut, where ours projects 16 -> 64" in text


def test_cache_folder_and_extra_flags(tmp_path):
    (tmp_path / "roadmap_timm_data.json").write_text('{"size": 73, "val_interpolation": "bicubic", '
                                                     '"train_images_wanted": null, "val_images_wanted": null}')
    cfg = resolve_config(["step=modern_recipe", "scale=proxy64"])
    plain = build(cfg, Target(device="cpu"))
    same = build(cfg, Target(device="cpu", data_dir=str(tmp_path), extra=["--log-interval", "10", "--workers", "1"]))
    assert any("prepared cache" in d for d in plain.differences)
    assert not any("prepared cache" in d for d in same.differences)
    assert same.values["log_interval"] == 10 and same.values["workers"] == 1


def test_timm_train_runs_a_script_with_the_steps_registered(tmp_path, monkeypatch):
    from roadmap.timm_train import script_and_args

    monkeypatch.delenv("TIMM_TRAIN", raising=False)
    script = tmp_path / "train.py"
    script.write_text("import sys, timm\n"
                      "m = timm.create_model('roadmap_modern_recipe', num_classes=3, width_mult=0.25)\n"
                      "print(__name__, sys.argv[1:], sum(p.numel() for p in m.parameters()), sys.path[0])\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "roadmap.timm_train", str(script), "--lr", "0.1"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    name, argv, params, path0 = re.fullmatch(r"(\S+) (\[.*\]) (\d+) (.*)", out.stdout.strip()).groups()
    assert (name, argv, path0) == ("__main__", "['--lr', '0.1']", str(tmp_path)) and int(params) > 0
    with pytest.raises(SystemExit, match="give the path of timm's train.py first"):
        script_and_args(["--lr", "0.1"])  # no script, no $TIMM_TRAIN
