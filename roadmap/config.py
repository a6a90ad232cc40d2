"""Structured configs (registered in Hydra's ConfigStore) and their validation.

Every config value is checked by :func:`validate` before anything is built or run. A bad value
raises :class:`ConfigError` whose message is one line naming the key, the value and what is
allowed; entry points print that line and exit with status 2.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
import yaml

CONF_DIR = Path(__file__).resolve().parent / "conf"

REFERENCE_PATH = CONF_DIR.parent / "reference.yaml"

# Keys added after runs were recorded, with the value that reproduces the code before them: a run
# directory whose config lacks one resumes only if the new config has that value.
LEGACY = {"model.zero_init_last": True, "recipe.zero_init_last": True, "recipe.eval_interpolation": "bicubic",
          "data.val_labels": None, "scale.regularization": "recipe"}


@functools.lru_cache(maxsize=None)
def reference() -> Dict[str, Any]:
    """The paper's figures (reference.yaml), parsed once."""
    with open(REFERENCE_PATH) as f:
        return yaml.safe_load(f)


def option_names(group: str) -> List[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def step_names() -> List[str]:
    """Every step preset: the ConvNeXt roadmap in the paper's order, then any others."""
    ordered = [s["name"] for s in reference()["convnext"]["steps"]]
    return ordered + [s for s in option_names("step") if s not in ordered]


class ConfigError(ValueError):
    """A configuration value is invalid. The message is one line meant for the user."""


def choice(default: str, *allowed: str) -> Any:
    """A string field restricted to `allowed` (checked by `validate`)."""
    return field(default=default, metadata={"choices": (default, *allowed)})


def ranged(default: Any, lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False) -> Any:
    """A number field restricted to [lo, hi] (or (lo, hi] with lo_open)."""
    return field(default=default, metadata={"range": (lo, hi, lo_open)})


# --------------------------------------------------------------------------------------------
# Model: one field per roadmap change. Comments name the paper's step that flips each field.
# --------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    # macro design
    depths: List[int] = field(default_factory=lambda: [3, 4, 6, 3])  # stage_ratio: 3-3-9-3
    width: int = ranged(64, 1)                   # narrow width of stage 1 (increase_width: 96)
    width_mult: float = ranged(1.0, 0, 16, lo_open=True)  # proxy runs only (scale, not roadmap)
    stem: str = choice("resnet", "patchify", "cmt")  # patchify_stem; cmt: hybrid_cmt_stem
    stem_channels: int = ranged(32, 1)           # width of CMT's three 3x3 stem convs (stem=cmt)
    # ResNeXt
    conv_groups: str = choice("dense", "depthwise")  # depthwise_conv
    # inverted bottleneck
    block: str = choice("bottleneck", "inverted")  # inverted_bottleneck
    expansion: int = ranged(4, 1)                # wide = expansion * narrow
    mlp_ratio: Optional[float] = ranged(None, 0, lo_open=True)  # inverted MLP hidden = int(narrow * mlp_ratio); None: expansion
    # large kernel
    dw_position: str = choice("middle", "first")  # move_up_dwconv
    kernel_size: int = 3                         # kernel_5/7/9/11 (odd, 1..31)
    # micro design
    act: str = choice("relu", "gelu")            # gelu
    activations: str = choice("all", "one")      # fewer_activations
    norms: str = choice("all", "one")            # fewer_norms
    norm_type: str = choice("bn", "ln")          # layer_norm
    downsample: str = choice("in_block", "separate", "patch_embed")  # separate_downsampling; patch_embed: CMT
    # CMT (Guo et al. 2022) parts and the ConvNeXt -> CMT hybrid roadmap (hybrid_* steps)
    lpu: bool = False                            # hybrid_lpu: x + DWConv3x3(x) at the start of every block
    mlp: str = choice("mlp", "irffn")            # hybrid_irffn: the block's MLP -> CMT's IRFFN
    mixer: List[str] = field(default_factory=lambda: ["conv"] * 4)  # per stage: conv | lmhsa (hybrid_attn_*)
    heads: List[int] = field(default_factory=lambda: [1, 2, 4, 8])  # LMHSA heads per stage
    attn_reduction: List[int] = field(default_factory=lambda: [8, 4, 2, 1])  # LMHSA key/value reduction k
    rel_pos_bias: bool = False                   # hybrid_rel_pos: learnable bias B (heads, N, N/k^2) per stage
    img_size: int = ranged(224, 16)              # build resolution: sizes B (other inputs resize it)
    head: str = choice("linear", "conv1280")     # conv1280: CMT's 1x1 conv -> BN -> Swish -> pool -> dropout
    # regularisation, init, head
    layer_scale: float = ranged(0.0, 0)          # init of the per-channel branch gain; 0 = off
    drop_path_rate: float = ranged(0.0, 0, 1)    # stochastic depth, linear over blocks
    head_init_scale: float = ranged(1.0, 0, lo_open=True)
    init: str = choice("auto", "resnet", "convnext")  # auto: resnet for BN models, else convnext
    num_classes: int = ranged(1000, 1)
    in_chans: int = ranged(3, 1)
    zero_init_last: bool = True                  # zero the last BN of each BN block's branch (timm's resnet50; the
                                                 # classic recipe turns it off: torchvision's ResNet-50 did not)



# --------------------------------------------------------------------------------------------
# Training recipe, data, scale, logger: consumed by roadmap.train (issue 3).
# --------------------------------------------------------------------------------------------
@dataclass
class RecipeConfig:
    name: str = "classic"
    opt: str = choice("sgd", "adamw")
    lr: float = ranged(0.1, 0, lo_open=True)    # base lr for `lr_base_batch` images
    lr_base_batch: int = ranged(256, 1)         # lr scales linearly with the global batch
    momentum: float = ranged(0.9, 0, 1)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = ranged(1e-4, 0)
    no_wd_norm_bias: bool = False               # no decay on norms, biases, layer-scale gammas
    epochs: int = ranged(90, 1)
    sched: str = choice("step", "cosine")
    decay_milestones: List[int] = field(default_factory=lambda: [30, 60])
    decay_rate: float = ranged(0.1, 0, 1)
    warmup_epochs: float = ranged(0, 0)
    warmup_lr: float = ranged(1e-6, 0)
    min_lr: float = ranged(1e-6, 0)
    # augmentation (timm create_transform)
    auto_augment: Optional[str] = None          # e.g. rand-m9-mstd0.5-inc1
    mixup: float = ranged(0.0, 0)
    cutmix: float = ranged(0.0, 0)
    mixup_prob: float = ranged(1.0, 0, 1)
    mixup_switch_prob: float = ranged(0.5, 0, 1)
    reprob: float = ranged(0.0, 0, 1)           # random erasing
    smoothing: float = ranged(0.0, 0, 1)        # label smoothing
    train_interpolation: str = choice("bilinear", "bicubic", "random")
    crop_pct: float = ranged(0.875, 0, 1, lo_open=True)
    drop_path_rate: float = ranged(0.0, 0, 1)   # stochastic depth, feeds model.drop_path_rate
    ema: bool = False
    ema_decay: float = ranged(0.9999, 0, 1)
    grad_clip: Optional[float] = None
    eval_interpolation: str = choice("bicubic", "bilinear")  # eval resize (torchvision: bilinear; ConvNeXt: bicubic)
    zero_init_last: bool = True                 # feeds model.zero_init_last


@dataclass
class DataConfig:
    name: str = choice("imagenette", "imagenet", "imagefolder", "cifar10", "cifar100", "synthetic")
    root: Optional[str] = None                  # default: $ROADMAP_DATA/<name> or ../shared/data/<name>
    num_classes: int = ranged(10, 1)            # read from the folder for imagefolder data
    train_split: str = "train"
    val_split: str = "val"
    cache: bool = True                          # prepared uint8 tensor cache (fast path, issue 5)
    cache_dir: Optional[str] = None             # default: <root>/../.roadmap-cache or ~/.cache
    synthetic_size: int = ranged(512, 1)
    val_labels: Optional[str] = None            # imagenet, flat val/: LOC_val_solution.csv or the devkit's
                                                # ILSVRC2012_validation_ground_truth.txt (default: found under root)


@dataclass
class HealthConfig:
    """The health rule's thresholds (roadmap/health.py; stated and justified in docs/health.md). The
    chance loss is ln K: the loss of a constant uniform prediction on any targets that sum to one, so
    also on Mixup/CutMix-mixed, label-smoothed ones (measured: `python -m roadmap.chance`)."""
    loss_margin: float = ranged(0.025, 0)       # nats: "at chance" = the epoch's train loss >= ln K - loss_margin
    stall_epochs: int = ranged(3, 1)            # stalled: at chance after warm-up for N = max(stall_epochs,
    stall_fraction: float = ranged(0.25, 0, 1)  #   ceil(stall_fraction x epochs)) epochs in a row
    spike_factor: float = ranged(1.25, 1, lo_open=True)  # unstable: an epoch's train loss > factor x the lowest before it
    top1_margin: float = ranged(0.5, 0)         # chance: top-1 <= (1 + top1_margin) x chance (100 / K)
    learned_factor: float = ranged(3.0, 1, lo_open=True)  # collapsed: back at chance after top-1 >= factor x chance


@dataclass
class ScaleConfig:
    name: str = "smoke"
    img_size: int = ranged(64, 16)              # training resolution
    eval_img_size: Optional[int] = None         # default: img_size
    width_mult: float = ranged(1.0, 0, 16, lo_open=True)
    epochs: Optional[int] = None                # default: the recipe's epochs
    batch_size: int = ranged(64, 1)             # per process, per step
    global_batch: Optional[int] = None          # reached through gradient accumulation
    lr_scaling: str = choice("linear", "sqrt")  # lr = recipe.lr * (global_batch / lr_base_batch)[^0.5]
    # recipe name -> lr multiplier: a proxy's learning rate, chosen once per recipe (docs/studies/proxy64.md)
    lr_mult: Dict[str, float] = field(default_factory=lambda: {"classic": 1.0, "modern": 1.0})
    max_steps_per_epoch: Optional[int] = None
    max_train_samples: Optional[int] = None     # class-balanced subset (smoke scale)
    max_val_samples: Optional[int] = None
    workers: int = ranged(2, 0)
    threads: Optional[int] = ranged(None, 1)    # CPU threads of this run (None: OMP_NUM_THREADS, else all cores)
    loader: str = choice("cpu", "device")       # device: uint8 images + augmentation on the device (device_data.py)
    device: str = "auto"                        # auto | cpu | cuda
    amp: str = choice("auto", "none", "bf16")   # auto: bf16 on CUDA, none on CPU (measured: docs/speed.md)
    channels_last: str = choice("auto", "on", "off")  # auto: on for CUDA; on CPU for NCHW-block models only
    compile: bool = False
    eval_every: int = ranged(1, 1)
    # recipe: the recipe's augmentation as it is; off: no RandAugment, Mixup/CutMix or random erasing
    # (label smoothing and stochastic depth stay) -- for budgets of a few epochs (scale=quick), where
    # augmentation built for 300 epochs only slows learning down (apply_scale_augment)
    augment: str = choice("recipe", "off")
    # recipe: the recipe's regularisation as it is; budget: every regulariser scaled to the budget by
    # f = min(1, epochs / recipe.epochs) (apply_scale_augment; issue 20's pre-registered rule,
    # docs/studies/proxy64-budgets.md): RandAugment's per-op probability, the Mixup/CutMix probability,
    # the random-erasing probability and the stochastic-depth rate are each multiplied by f
    regularization: str = choice("recipe", "budget")
    checkpoint_every_min: Optional[float] = ranged(15.0, 0, lo_open=True)  # also inside epochs; null: epoch ends only
    imagenet_only: bool = False                 # refuse any dataset but ImageNet-1k (scale=paper sets it)
    health: HealthConfig = field(default_factory=HealthConfig)  # the health rule's thresholds (docs/health.md)
    on_unhealthy: str = choice("continue", "stop")  # stop: end the run the epoch it turns unhealthy (status stopped_unhealthy)


@dataclass
class LoggerConfig:
    name: str = choice("wandb", "none")
    mode: str = choice("offline", "online", "disabled")
    project: str = "roadmap"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    dir: Optional[str] = None


@dataclass
class RegimeConfig:
    name: str = "resnet50"
    resnet_depths: List[int] = field(default_factory=lambda: [3, 4, 6, 3])
    resnet_width: int = 64
    convnext_depths: List[int] = field(default_factory=lambda: [3, 3, 9, 3])
    stage_ratio_width: int = 64
    wide_width: int = 96
    drop_path_rate: float = 0.1


@dataclass
class Config:
    step: str = MISSING
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    out_dir: str = "outputs"
    ablation: str = "none"                      # leave-one-out variant (conf/ablation/)
    experiment_name: str = "adhoc"              # set by conf/experiment/*.yaml
    sweep_id: Optional[str] = None              # groups a sweep's runs (folder, W&B group)
    results_dir: str = "results"                # where sweep reports go (results/<name>/)
    keep_runs: bool = False                     # copy each finished run's metrics.json, history.csv, config.yaml to results_dir/<study>/runs/
    init_from: Optional[str] = None             # start from these weights (a last.pt or a state dict)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _check_fields(node: Any, schema: type, prefix: str) -> None:
    for f in dataclasses.fields(schema):
        key, value = f"{prefix}.{f.name}", getattr(node, f.name)
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{key}={value!r} is invalid; allowed: {', '.join(f.metadata['choices'])}")
        if "range" in f.metadata and value is not None:
            lo, hi, lo_open = f.metadata["range"]
            if (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and value > hi):
                lo_s = "-inf" if lo is None else lo
                hi_s = "inf" if hi is None else hi
                raise ConfigError(f"{key}={value!r} is out of range; allowed: {'(' if lo_open else '['}{lo_s}, {hi_s}]")


def _check_ints(key: str, value: Any, n: Optional[int] = None, lo: int = 1) -> None:
    value = list(value)
    if (n is not None and len(value) != n) or any(not isinstance(v, int) or v < lo for v in value):
        what = f"{n} integers >= {lo}" if n is not None else f"integers >= {lo}"
        raise ConfigError(f"{key}={value} is invalid; allowed: {what}, e.g. [3, 3, 9, 3]")


MIXERS = ("conv", "lmhsa")


def validate_model(m: Any, prefix: str = "model") -> None:
    _check_fields(m, ModelConfig, prefix)
    _check_ints(f"{prefix}.depths", m.depths, n=4)
    k = m.kernel_size
    if not isinstance(k, int) or k < 1 or k > 31 or k % 2 == 0:
        raise ConfigError(f"{prefix}.kernel_size={k!r} is invalid; allowed: odd integers 1..31 (the paper uses 3, 5, 7, 9, 11)")
    mixer = list(m.mixer)
    if len(mixer) != 4 or any(x not in MIXERS for x in mixer):
        raise ConfigError(f"{prefix}.mixer={mixer} is invalid; allowed: 4 of {', '.join(MIXERS)} (one per stage), "
                          f"e.g. [conv, conv, lmhsa, lmhsa]")
    _check_ints(f"{prefix}.heads", m.heads, n=4)
    _check_ints(f"{prefix}.attn_reduction", m.attn_reduction, n=4)
    # the CMT parts replace pieces of an inverted block whose depthwise conv comes first
    for key, value, on in (("mixer", mixer, "lmhsa" in mixer), ("mlp", m.mlp, m.mlp == "irffn")):
        if on and (m.block != "inverted" or m.dw_position != "first"):
            raise ConfigError(f"{prefix}.{key}={value!r} needs an inverted block with the depthwise conv first; "
                              f"allowed only with block=inverted and dw_position=first")
    if "lmhsa" in mixer and m.downsample == "in_block":
        raise ConfigError(f"{prefix}.mixer={mixer} needs shape-preserving blocks; allowed with downsample=separate "
                          f"or patch_embed only")


def validate(cfg: DictConfig | Config) -> None:
    """Check every value of a full config; raise ConfigError with one line on the first bad one."""
    validate_model(cfg.model)
    for name, schema in (("recipe", RecipeConfig), ("data", DataConfig), ("scale", ScaleConfig),
                         ("logger", LoggerConfig)):
        _check_fields(cfg[name] if isinstance(cfg, DictConfig) else getattr(cfg, name), schema, name)
    _check_fields(cfg.scale.health, HealthConfig, "scale.health")
    if cfg.step not in step_names():
        raise ConfigError(f"step={cfg.step!r} is unknown; allowed: {', '.join(step_names())}")
    recipes = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))
    for name, mult in dict(cfg.scale.lr_mult or {}).items():
        if name not in recipes:
            raise ConfigError(f"scale.lr_mult.{name} is not a recipe; allowed keys: {', '.join(recipes)}")
        if not isinstance(mult, (int, float)) or mult <= 0:
            raise ConfigError(f"scale.lr_mult.{name}={mult!r} is out of range; allowed: (0, inf)")
    if cfg.scale.global_batch is not None and cfg.scale.global_batch % cfg.scale.batch_size:
        raise ConfigError(f"scale.global_batch={cfg.scale.global_batch} is not a multiple of scale.batch_size={cfg.scale.batch_size}")
    check_scale_data(cfg)


AUGMENT_OFF = {"auto_augment": None, "mixup": 0.0, "cutmix": 0.0, "reprob": 0.0}
RANDAUGMENT_P = 0.5   # timm's default per-op probability of RandAugment (its config string's `p`)


def budget_fraction(epochs: Any, recipe_epochs: Any) -> float:
    """f of scale.regularization=budget: the budget's share of the recipe's schedule, at most 1."""
    return min(1.0, float(epochs or recipe_epochs) / float(recipe_epochs))


def scale_randaugment(config_str: str, f: float) -> str:
    """A timm RandAugment string with its per-op probability `p` multiplied by f (the rest as given):
    rand-m9-mstd0.5-inc1 at f=0.5 -> rand-m9-mstd0.5-inc1-p0.25. Fixed-point, never 1e-05 (timm splits
    the string at '-')."""
    parts = [p for p in config_str.split("-") if not re.fullmatch(r"p[\d.]+", p)]
    old = [float(p[1:]) for p in config_str.split("-") if re.fullmatch(r"p[\d.]+", p)]
    prob = (old[0] if old else RANDAUGMENT_P) * f
    return "-".join(parts + [f"p{prob:.6f}".rstrip("0").rstrip(".")])


def apply_scale_augment(cfg: DictConfig) -> None:
    """The scale's say on the recipe's regularisation, written into the config itself, so the run's
    config.yaml and metrics.json record what was trained (recipe.mixup=0, ...), and every loader
    (CPU and device) reads the same values. Runs after the config is resolved.

    scale.augment=off: no RandAugment, Mixup/CutMix or random erasing. scale.regularization=budget:
    RandAugment's per-op probability, recipe.mixup_prob, recipe.reprob and the stochastic-depth rate
    (recipe's and model's) times f = min(1, scale.epochs / recipe.epochs); label smoothing, weight
    decay and every architectural setting as they are."""
    if OmegaConf.select(cfg, "scale.augment", default="recipe") == "off":
        for key, value in AUGMENT_OFF.items():
            cfg.recipe[key] = value
    if OmegaConf.select(cfg, "scale.regularization", default="recipe") == "budget":
        f = budget_fraction(cfg.scale.epochs, cfg.recipe.epochs)
        if cfg.recipe.auto_augment:
            cfg.recipe.auto_augment = scale_randaugment(str(cfg.recipe.auto_augment), f)
        for key in ("mixup_prob", "reprob", "drop_path_rate"):
            cfg.recipe[key] = float(cfg.recipe[key]) * f
        cfg.model.drop_path_rate = float(cfg.model.drop_path_rate) * f


def check_scale_data(cfg: Any) -> None:
    """scale=paper means ImageNet-1k: its schedule on another dataset is not the paper's experiment."""
    if getattr(cfg.scale, "imagenet_only", False) and cfg.data.name != "imagenet":
        raise ConfigError(f"scale={cfg.scale.name} trains on ImageNet-1k, not data={cfg.data.name}; use data=imagenet "
                          f"data.root=/path/to/imagenet (or scale.imagenet_only=false to run this schedule on "
                          f"{cfg.data.name} anyway)")


def effective_init(cfg: Any) -> str:
    """What `init` resolves to: `auto` is resnet (Kaiming fan-out, timm's resnet50) for BatchNorm models
    and convnext (truncated normal 0.02, timm's convnext) for LayerNorm models."""
    if cfg.init != "auto":
        return cfg.init
    return "resnet" if cfg.norm_type == "bn" else "convnext"


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
