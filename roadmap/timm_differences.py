"""What timm `train.py`'s flags cannot say about one of our runs, and what its user gets instead (the list
`python -m roadmap.timm_command` prints after the command), found by reading both loops: ours
(roadmap/train.py, data.py, loading.py) and train.py at the commit of roadmap/timm_train_flags.txt.

Each function returns the lines of one part: the data, the schedule, the loop, timm's own networks.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

MARKER = "roadmap_timm_data.json"  # written by roadmap.timm_data into the folder it makes


def lr_comment(cfg: Any, values: Dict[str, Any], target: Any) -> List[str]:
    """How --lr and the batch come about (comment lines above the command)."""
    recipe, scale = cfg.recipe, cfg.scale
    accum, per = values["grad_accum_steps"], values["batch_size"]
    global_batch = per * target.gpus * accum
    mult = float((scale.get("lr_mult") or {}).get(recipe.name, 1.0))
    power = "" if scale.lr_scaling == "linear" else "^0.5"
    return [f"global batch {global_batch} = {per} per process x {target.gpus} process(es) x {accum} accumulation step(s)",
            f"--lr {values['lr']!r} = recipe.lr {recipe.lr} x ({global_batch}/{recipe.lr_base_batch}){power} x "
            f"lr_mult[{recipe.name}] {mult:g} (ours, already scaled: train.py's --lr-base route is not used)"]


def differences(cfg: Any, values: Dict[str, Any], target: Any) -> List[str]:
    return [*data_differences(cfg, values), *schedule_differences(cfg, values), *loop_differences(cfg, target),
            *own_model_differences(cfg, values, target)]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def timm_data_folder(data_dir: str) -> Dict[str, Any]:
    """The record roadmap.timm_data left in a folder it wrote ({} for any other folder)."""
    p = Path(data_dir) / MARKER
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}


def data_differences(cfg: Any, values: Dict[str, Any]) -> List[str]:
    from .loading import cache_size_for

    data, scale, recipe = cfg.data, cfg.scale, cfg.recipe
    out: List[str] = []
    folder = timm_data_folder(values["data_dir"])
    size = cache_size_for(max(scale.img_size, scale.eval_img_size or 0), recipe.crop_pct)
    wanted = {"size": size, "val_interpolation": recipe.eval_interpolation,
              "train_images_wanted": scale.max_train_samples, "val_images_wanted": scale.max_val_samples}
    same = bool(folder) and all(folder.get(k) == v for k, v in wanted.items())
    if data.cache and data.name in ("imagenette", "imagenet", "imagefolder") and not same:
        out.append(f"the prepared cache: ours decodes every image once, resizes its shorter side to {size} px "
                   f"(train bicubic, val {recipe.eval_interpolation}) and keeps the centre {size}x{size}; train.py "
                   f"decodes the files of --data-dir every epoch, so from the original images its RandomResizedCrop "
                   f"sees other pixels (full resolution, the whole non-square image). Instead: `python -m "
                   f"roadmap.timm_data DIR <these overrides>` writes the cache's images as PNG (lossless) and "
                   f"--data-dir DIR gives train.py the pixels ours trains on")
    if (scale.max_train_samples or scale.max_val_samples) and not same:
        out.append(f"the class-balanced subset (scale.max_train_samples={scale.max_train_samples}, "
                   f"max_val_samples={scale.max_val_samples}): no train.py flag (--train-num-samples is for iterable "
                   f"datasets); a roadmap.timm_data folder holds exactly the subset")
    if data.name == "imagenet":
        out.append("ImageNet's flat val/ with the devkit's or Kaggle's labels: train.py reads class folders "
                   "(val/<wnid>/*.JPEG) only")
    if scale.eval_img_size and scale.eval_img_size != scale.img_size:
        out.append(f"scale.eval_img_size={scale.eval_img_size}: train.py evaluates at --img-size {scale.img_size}")
    if scale.loader == "device":
        out.append("scale.loader=device (our augmentation of whole batches on the GPU): train.py augments on "
                   "its CPU workers with timm's transforms, as our scale.loader=cpu")
    out += augment_notes(cfg)
    return out


def augment_notes(cfg: Any) -> List[str]:
    scale, recipe = cfg.scale, cfg.recipe
    out = []
    if scale.augment == "off":
        out.append("scale.augment=off has no train.py switch: its effect is in the values above (no --aa, --mixup 0, "
                   "--cutmix 0, --reprob 0)")
    if scale.regularization == "budget":
        out.append(f"scale.regularization=budget has no train.py switch: the scaled values are the ones printed "
                   f"(--aa {recipe.auto_augment}, --mixup-prob {recipe.mixup_prob:g}, --reprob {recipe.reprob:g}, "
                   f"--drop-path {cfg.model.drop_path_rate:g})")
    return out


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------
def cosine_gap(epochs: float, warmup: float, n: int = 20000) -> Tuple[float, float]:
    """(largest gap, ratio of summed lr) between train.py's cosine over all `epochs` with a `warmup`
    that is not a prefix, and ours (warm-up, then the cosine over the rest), as fractions of the peak lr."""
    gap, ours_sum, timm_sum = 0.0, 0.0, 0.0
    for i in range(n):
        t = epochs * i / n
        warm = t / warmup if t < warmup else None
        ours = warm if warm is not None else 0.5 * (1 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))
        timm = warm if warm is not None else 0.5 * (1 + math.cos(math.pi * t / epochs))
        gap = max(gap, ours - timm)
        ours_sum, timm_sum = ours_sum + ours, timm_sum + timm
    return gap, timm_sum / ours_sum


def schedule_differences(cfg: Any, values: Dict[str, Any]) -> List[str]:
    out = []
    epochs, warmup = values["epochs"], float(values["warmup_epochs"])
    if values["sched"] == "cosine" and warmup > 0 and not values.get("warmup_prefix"):
        gap, ratio = cosine_gap(epochs, warmup)
        out.append(f"the warm-up ({warmup:.4g} epochs) as a prefix of the cosine: ours warms up, then runs the cosine "
                   f"over the remaining {epochs - warmup:.4g} epochs; train.py takes a fractional warm-up only through "
                   f"-c (argparse reads --warmup-epochs as an integer) and only without --warmup-prefix (with it "
                   f"train.py's epoch count becomes a float and its epoch loop fails), so its cosine spans all "
                   f"{epochs} epochs from update 0: after the warm-up its lr is up to {100 * gap:.1f} % of the peak "
                   f"below ours, and its summed lr is {100 * ratio:.1f} % of ours")
    if values["sched"] == "multistep":
        out.append("the step decays: train.py's multistep schedule decays one update earlier than ours (at update "
                   "m*U - 1 where ours decays at m*U, U updates per epoch)")
    if values["grad_accum_steps"] > 1:
        out.append("an epoch's last incomplete accumulation group: ours drops it (floor(batches/accum) updates), "
                   "train.py makes one smaller update (ceil(batches/accum)), so its updates per epoch, and every "
                   "epoch-to-update conversion of the schedule, can be larger by one")
    if cfg.scale.max_steps_per_epoch:
        out.append(f"scale.max_steps_per_epoch={cfg.scale.max_steps_per_epoch}: train.py trains on every batch of an "
                   f"epoch (its --train-batches-per-epoch acts only with --train-img-sizes)")
    return out


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def loop_differences(cfg: Any, target: Any) -> List[str]:
    out = ["per-sample seeding: ours seeds each sample's augmentation by (seed, epoch, index), the same for any "
           "number of loader workers; train.py seeds each loader worker (--worker-seeding all) and draws the order "
           "from the global RNG, so its draws depend on --workers; neither loop reproduces the other's order or "
           "augmentations: a seed of one is a new seed for the other",
           "the order of augmentation and Mixup: --no-prefetcher keeps ours (per sample: crop, flip, RandAugment, "
           "normalise, random erasing; then Mixup/CutMix on the float batch); train.py's default prefetcher, "
           "faster on a GPU, mixes uint8 images in its collate (rounded) and erases after mixing",
           "resuming: ours resumes inside an epoch from last.pt with every RNG restored; train.py's --resume restarts "
           "at an epoch boundary with its RNGs seeded afresh (utils.random_seed at start, no RNG state in its "
           "checkpoint), so the resumed epochs draw from the streams a fresh run's first epochs drew from",
           "a non-finite loss stops our run (failed.json); train.py goes on",
           "the record: ours writes history.csv and metrics.json (last and best top-1); train.py writes summary.csv "
           "(epochs from 0) and args.yaml: `python -m roadmap.timm_import` turns them into our run directory"]
    if target.gpus > 1:
        out += ["BatchNorm statistics under DDP: train.py averages the running statistics over the ranks after "
                "every epoch (--dist-bn reduce); ours keeps each rank's and evaluates each rank's shard with them "
                "(--dist-bn '' would match ours; BN models only)",
                "validation under DDP: train.py pads the val set to a multiple of the processes (a few images count "
                "twice) and averages the ranks' accuracies; ours counts every image once"]
    if cfg.recipe.ema:
        out.append("EMA: train.py's summary.csv holds the EMA model's eval metrics in place of the raw model's; ours "
                   "records both (ema_top1 beside top1)")
    if cfg.init_from:
        out.append("init_from: --initial-checkpoint loads the 'model' entry of our last.pt (timm's load_checkpoint)")
    return out


def own_model_differences(cfg: Any, values: Dict[str, Any], target: Any) -> List[str]:
    """timm's own ResNet at a proxy width: its stem stays 64 channels wide (measured parameter counts)."""
    if not target.timm_model or not values["model"].startswith("resnet") or "channels" not in values.get("model_kwargs", {}):
        return []
    import timm

    from .measure import count_params
    from .model import ModernizableResNet

    theirs = count_params(timm.create_model(values["model"], num_classes=values["num_classes"], **values["model_kwargs"]))
    ours = count_params(ModernizableResNet(cfg.model))
    w0 = values["model_kwargs"]["channels"][0]
    return [f"timm's {values['model']} builds its 7x7 stem with 64 channels whatever `channels` says (ResNet.__init__: "
            f"inplanes = 64 unless stem_type='deep'); at width x{cfg.model.width_mult:g} ours has {w0}, so its stem "
            f"and its first block's input are wider (and when 4 x {w0} = 64 its first block needs no projection "
            f"shortcut, where ours projects {w0} -> {4 * w0}): {theirs:,} parameters against our {ours:,}. Closest kwargs: "
            f"channels={values['model_kwargs']['channels']} (stem_type='deep', stem_width={w0 // 2} would give a "
            f"{w0}-channel stem, but three 3x3 convs: another architecture)"]
