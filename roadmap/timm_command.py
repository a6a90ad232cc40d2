"""`python -m roadmap.timm_command step=<step> scale=<scale> [overrides]`: the timm `train.py` command
that trains the same model with the same recipe, and what train.py's flags cannot say.

    python -m roadmap.timm_command step=modern_recipe scale=proxy64 --device cpu
    python -m roadmap.timm_command step=separate_downsampling scale=paper data=imagenet data.root=/data/in1k --gpus 8
    python -m roadmap.timm_command step=separate_downsampling scale=proxy64 --timm-model    # timm's convnext_tiny
    python -m roadmap.timm_command step=baseline scale=proxy64 -- --log-interval 10         # more train.py flags

The overrides are those of `python -m roadmap` (same composition, same one-line errors). The values are
the run's after our own resolution: the learning rate after the batch scaling and the scale's lr_mult,
the schedule compressed to the scale's epochs (warm-up and milestones keep their fraction) and stepped
per update (`--sched-on-updates`), the scale's changes to the augmentation already applied. Values that
train.py's argparse cannot read from its command line (a fractional `--warmup-epochs`, an int-typed
flag) go into a YAML file that train.py reads with `-c` (it sets the parser's defaults, unconverted).

The flags are those of train.py at the timm commit named in `roadmap/timm_train_flags.txt` (generated
by `experiments/timm_flags.py`); `--model roadmap_<step>` needs the steps registered, which
`python -m roadmap.timm_train <train.py>` does. Import its runs with `python -m roadmap.timm_import`.
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, apply_scale_augment, validate

FLAGS_FILE = Path(__file__).resolve().with_name("timm_train_flags.txt")
TIMM_REPO = "huggingface/pytorch-image-models"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's IMAGENET_DEFAULT_MEAN/STD (our transforms' default)
TIMM_MODELS = {("resnet", "resnet50"): "resnet50", ("resnet", "resnet200"): "resnet200",
               ("convnext", "resnet50"): "convnext_tiny", ("convnext", "resnet200"): "convnext_base"}
END_STEPS = {"baseline": "resnet", "modern_recipe": "resnet", "separate_downsampling": "convnext"}


# ---------------------------------------------------------------------------------------------
# train.py's flags, as stored
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    options: Tuple[str, ...]
    dest: str
    type: str       # int | float | str | bool
    nargs: str      # '-' (one value), '?', '*', '+', '0'
    action: str     # store | store_true | kwargs | help | ...
    default: Any

    @property
    def long(self) -> str:
        return next(o for o in reversed(self.options) if o.startswith("--"))


@functools.lru_cache(maxsize=None)
def timm_flags() -> Dict[str, Flag]:
    """Every flag of train.py by dest, from roadmap/timm_train_flags.txt."""
    flags = {}
    for line in FLAGS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        options, dest, typ, nargs, action, default = line.split("\t")
        flags[dest] = Flag(tuple(options.split(",")), dest, typ, nargs, action, yaml.safe_load(default))
    return flags


@functools.lru_cache(maxsize=None)
def timm_source() -> Dict[str, str]:
    """{'commit', 'version', 'line'}: the timm commit whose train.py the flags come from."""
    first = FLAGS_FILE.read_text().splitlines()[0]
    commit = first.split("@", 1)[1].split()[0]
    version = first.split("(timm ", 1)[1].split(",")[0].rstrip(")")
    return {"commit": commit, "version": version, "line": first.lstrip("# ")}


# ---------------------------------------------------------------------------------------------
# Our config, resolved as a run resolves it
# ---------------------------------------------------------------------------------------------
def resolve_config(overrides: Sequence[str]) -> DictConfig:
    """The config `python -m roadmap <overrides>` would train, after its own resolution (roadmap.train.run):
    typos fail with our one-line ConfigError, the scale's augmentation rules applied."""
    from .__main__ import precheck
    from .data import discover_num_classes
    from .steps import compose_config

    precheck(list(overrides))
    cfg = compose_config(list(overrides))
    discover_num_classes(cfg)
    OmegaConf.resolve(cfg)
    validate(cfg)
    apply_scale_augment(cfg)
    return cfg


@dataclass
class Target:
    """Where the command runs: processes, device, paths (the options of this CLI)."""
    gpus: int = 1
    device: Optional[str] = None     # None: scale.device, with auto -> cuda (train.py's default)
    data_dir: Optional[str] = None
    train_py: str = "train.py"
    python: str = "python"
    output: str = "outputs/timm"
    experiment: Optional[str] = None
    timm_model: bool = False
    extra: List[str] = field(default_factory=list)

    def device_of(self, cfg: Any) -> str:
        return self.device or (cfg.scale.device if cfg.scale.device != "auto" else "cuda")


@dataclass
class TimmCommand:
    """One train.py invocation: the values by dest (CLI and -c YAML together), the launcher, the notes."""
    cfg: Any
    target: Target
    values: Dict[str, Any]
    config_file: Optional[str]
    launcher: List[str]
    comments: List[str]
    differences: List[str]

    @property
    def yaml_values(self) -> Dict[str, Any]:
        return {k: v for k, v in self.values.items() if needs_config_file(timm_flags()[k], v)}

    @property
    def cli_values(self) -> Dict[str, Any]:
        return {k: v for k, v in self.values.items() if not needs_config_file(timm_flags()[k], v)}


def _integral(x: float) -> bool:
    return abs(float(x) - round(float(x))) < 1e-9


def needs_config_file(flag: Flag, value: Any) -> bool:
    """An int-typed flag with a fractional value: argparse refuses it on the command line, -c takes it."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return flag.type == "int" and any(isinstance(v, float) and not _integral(v) for v in items)


# ---------------------------------------------------------------------------------------------
# The mapping, one group of flags at a time
# ---------------------------------------------------------------------------------------------
def data_values(cfg: Any, target: Target) -> Dict[str, Any]:
    from .data import resolve_root

    data = cfg.data
    if data.name == "synthetic":
        raise ConfigError("data=synthetic has no files train.py could read; allowed: imagenette, imagenet, "
                          "imagefolder, cifar10, cifar100")
    out: Dict[str, Any] = {}
    if data.name in ("cifar10", "cifar100"):
        out.update(dataset=f"torch/{data.name}", dataset_download=True)
    # timm's torch/cifar datasets read any split but train/training as the test set
    out.update(data_dir=target.data_dir or str(resolve_root(data)), train_split=data.train_split, val_split=data.val_split,
               num_classes=int(data.num_classes), img_size=int(cfg.scale.img_size),
               crop_pct=float(cfg.recipe.crop_pct), interpolation=cfg.recipe.eval_interpolation,
               mean=list(MEAN), std=list(STD))
    return out


def model_kwargs(cfg: Any) -> Dict[str, Any]:
    """The model fields of this run that differ from what timm's `roadmap_<step>` builds (the step's
    preset at full scale: roadmap.registry); num_classes and drop_path_rate have flags of their own."""
    from .steps import model_config

    base = model_config(cfg.step, cfg.regime.name)
    run = OmegaConf.to_container(cfg.model, resolve=True)
    skip = ("num_classes", "drop_path_rate")
    return {k: v for k, v in run.items() if k not in skip and v != base[k]}


def own_model_kwargs(cfg: Any) -> Tuple[str, Dict[str, Any]]:
    """timm's own network of an end step (resnet50/200, convnext_tiny/base) and the kwargs that come closest."""
    from .model import stage_widths

    family = END_STEPS.get(cfg.step)
    if family is None:
        raise ConfigError(f"--timm-model: step={cfg.step} has no timm network; allowed: {', '.join(END_STEPS)}")
    name = TIMM_MODELS[(family, cfg.regime.name)]
    widths = stage_widths(cfg.model)
    full = [cfg.model.width * 2 ** i for i in range(4)]
    kwargs: Dict[str, Any] = {}
    if widths != full:
        kwargs["channels" if family == "resnet" else "dims"] = widths
    if family == "resnet" and not cfg.model.zero_init_last:
        kwargs["zero_init_last"] = False
    allowed = {"width_mult", "zero_init_last"}
    other = sorted(set(model_kwargs(cfg)) - allowed)
    if other:
        raise ConfigError(f"--timm-model: model.{other[0]} is changed and has no {name} equivalent; allowed changes: "
                          f"{', '.join(sorted(allowed))}")
    return name, kwargs


def model_values(cfg: Any, target: Target) -> Dict[str, Any]:
    if target.timm_model:
        name, kwargs = own_model_kwargs(cfg)
    else:
        name = f"{'roadmap200' if cfg.regime.name == 'resnet200' else 'roadmap'}_{cfg.step}"
        kwargs = model_kwargs(cfg)
    out: Dict[str, Any] = {"model": name}
    if kwargs:
        out["model_kwargs"] = kwargs
    out["drop_path"] = float(cfg.model.drop_path_rate)
    if cfg.init_from:
        out["initial_checkpoint"] = str(cfg.init_from)
    return out


def optimizer_values(cfg: Any, target: Target) -> Dict[str, Any]:
    from .train import accumulation, learning_rate

    recipe, scale = cfg.recipe, cfg.scale
    global_batch, accum = accumulation(scale.global_batch, scale.batch_size, target.gpus)
    out: Dict[str, Any] = {"batch_size": int(scale.batch_size), "validation_batch_size": int(scale.batch_size) * 2,
                           "grad_accum_steps": accum}
    # timm's 'sgd' is Nesterov; ours (torchvision's recipe) is plain momentum, as roadmap.train.build_optimizer
    out["opt"] = "adamw" if recipe.opt == "adamw" else "momentum"
    out["lr"] = learning_rate(recipe, scale, global_batch)
    if recipe.opt == "adamw":
        out["opt_betas"] = [float(b) for b in recipe.betas]
    else:
        out["momentum"] = float(recipe.momentum)
    out["weight_decay"] = float(recipe.weight_decay)
    if not recipe.no_wd_norm_bias:  # train.py always filters norms/biases out of the decay unless told
        out["opt_kwargs"] = {"filter_bias_and_bn": False}
    if recipe.grad_clip:
        out.update(clip_grad=float(recipe.grad_clip), clip_mode="norm")
    return out


def schedule_values(cfg: Any) -> Dict[str, Any]:
    """Per-update schedule. Cosine with a whole number of warm-up epochs: --warmup-prefix and --epochs
    E - W, exactly ours (warm-up, then the cosine over the rest). A fractional warm-up cannot be a prefix
    (train.py's epoch count would become a float): the cosine then spans all E epochs (see differences)."""
    from .train import schedule_lengths

    recipe = cfg.recipe
    lengths = schedule_lengths(cfg, 1)
    epochs, warmup = int(lengths["epochs"]), float(lengths["warmup_epochs"])
    warm = int(round(warmup)) if _integral(warmup) else warmup
    out: Dict[str, Any] = {"sched_on_updates": True, "warmup_lr": float(recipe.warmup_lr),
                           "min_lr": float(recipe.min_lr)}
    if recipe.sched == "cosine":
        prefix = warmup > 0 and _integral(warmup) and warm < epochs
        out.update(sched="cosine", epochs=epochs - warm if prefix else epochs, warmup_epochs=warm)
        if prefix:
            out["warmup_prefix"] = True
    else:
        miles = [int(round(m)) if _integral(m) else float(m) for m in lengths["milestones"]]
        out.update(sched="multistep", epochs=epochs, warmup_epochs=warm, decay_milestones=miles,
                   decay_rate=float(recipe.decay_rate))
    return out


def augment_values(cfg: Any) -> Dict[str, Any]:
    recipe = cfg.recipe
    out: Dict[str, Any] = {"train_interpolation": recipe.train_interpolation}
    if recipe.auto_augment:
        out["aa"] = str(recipe.auto_augment)
    out.update(color_jitter=0.0,  # ours has none; train.py's default 0.4 acts whenever RandAugment is off
               reprob=float(recipe.reprob), remode="pixel", recount=1,
               mixup=float(recipe.mixup), cutmix=float(recipe.cutmix), mixup_prob=float(recipe.mixup_prob),
               mixup_switch_prob=float(recipe.mixup_switch_prob), mixup_mode="batch", smoothing=float(recipe.smoothing))
    if recipe.ema:
        out.update(model_ema=True, model_ema_decay=float(recipe.ema_decay))
    return out


def run_values(cfg: Any, target: Target) -> Dict[str, Any]:
    scale, device = cfg.scale, target.device_of(cfg)
    out: Dict[str, Any] = {"seed": int(cfg.seed), "workers": int(scale.workers), "val_interval": int(scale.eval_every),
                           "no_prefetcher": True}
    if device != "cuda":
        out["device"] = device
    if scale.amp == "bf16" or (scale.amp == "auto" and device == "cuda"):
        out.update(amp=True, amp_dtype="bfloat16")
    if channels_last(cfg, device):
        out["channels_last"] = True
    if scale.compile:
        out["torchcompile"] = "inductor"
    out.update(output=target.output, experiment=experiment_name(cfg, target))
    return out


def channels_last(cfg: Any, device: str) -> bool:
    """As roadmap.train: on for CUDA; on CPU only for models whose blocks run NCHW (a speed lever)."""
    from .model import nhwc_block

    if cfg.scale.channels_last != "auto":
        return cfg.scale.channels_last == "on"
    return device == "cuda" or not any(nhwc_block(cfg.model, m) for m in cfg.model.mixer)


def experiment_name(cfg: Any, target: Target) -> str:
    if target.experiment:
        return target.experiment
    own = f"-{own_model_kwargs(cfg)[0]}" if target.timm_model else ""
    return f"{cfg.step}{own}-{cfg.scale.name}-seed{cfg.seed}"


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def build(cfg: Any, target: Optional[Target] = None) -> TimmCommand:
    from .timm_differences import differences, lr_comment

    target = target or Target()
    values: Dict[str, Any] = {}
    for part in (data_values(cfg, target), model_values(cfg, target), optimizer_values(cfg, target),
                 schedule_values(cfg), augment_values(cfg), run_values(cfg, target)):
        values.update(part)
    values.update(parse_extra(target.extra))
    unknown = [k for k in values if k not in timm_flags()]
    if unknown:  # a mapping bug, never the user's: every flag printed must exist at the targeted commit
        raise AssertionError(f"train.py at {timm_source()['commit'][:8]} has no flag for {unknown}")
    config_file = None
    if any(needs_config_file(timm_flags()[k], v) for k, v in values.items()):
        config_file = f"{target.output}/{values['experiment']}.yaml"
    wrapper = ["-m", "roadmap.timm_train", target.train_py]
    launcher = (["torchrun", f"--nproc_per_node={target.gpus}"] if target.gpus > 1 else [target.python]) + wrapper
    return TimmCommand(cfg, target, values, config_file, launcher, lr_comment(cfg, values, target),
                       differences(cfg, values, target))


def parse_extra(extra: Sequence[str]) -> Dict[str, Any]:
    """More train.py flags given after `--`: checked against the stored flags, parsed as train.py would."""
    if not extra:
        return {}
    by_option = {o: f for f in timm_flags().values() for o in f.options}
    for token in extra:
        if token.startswith("-") and token.split("=")[0] not in by_option and not _is_number(token):
            raise ConfigError(f"{token} is not a flag of train.py at {timm_source()['commit'][:8]}; "
                              f"see {FLAGS_FILE.name}")
    ns = vars(timm_parser().parse_args(list(extra)))
    given = {by_option[t.split("=")[0]].dest for t in extra if t.split("=")[0] in by_option}
    return {k: ns[k] for k in given}


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def format_value(flag: Flag, value: Any) -> List[str]:
    """The command-line tokens of one flag's value (unquoted)."""
    if flag.action == "store_true":
        return [flag.long] if value else []
    if flag.action == "kwargs":
        return [flag.long] + [f"{k}={kwarg_text(v)}" for k, v in value.items()]
    items = value if isinstance(value, (list, tuple)) else [value]
    return [flag.long] + [repr(v) if isinstance(v, float) else str(v) for v in items]


def kwarg_text(v: Any) -> str:
    """A --model-kwargs value that timm's ParseKwargs (ast.literal_eval, else the string) reads back as `v`."""
    if isinstance(v, str):
        try:
            ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v
        return repr(v)
    return repr(v).replace(" ", "")


def render(cmd: TimmCommand) -> str:
    src = timm_source()
    lines = [f"# timm train.py for step={cmd.cfg.step} scale={cmd.cfg.scale.name} seed={cmd.cfg.seed} "
             f"(recipe={cmd.cfg.recipe.name}, regime={cmd.cfg.regime.name}, data={cmd.cfg.data.name})",
             f"# flags of train.py at {TIMM_REPO}@{src['commit']} (timm {src['version']}); "
             f"train.py is not in timm's wheel: take it from that commit",
             *[f"# {c}" for c in cmd.comments]]
    if cmd.config_file:
        lines += [f"# -c: values argparse cannot take on train.py's command line (int-typed flags, fractional values)",
                  f"mkdir -p {shlex.quote(cmd.target.output)}",
                  f"cat > {shlex.quote(cmd.config_file)} <<'EOF'",
                  *[f"{k}: {json.dumps(v)}" for k, v in cmd.yaml_values.items()], "EOF"]
    tokens = [*cmd.launcher] + (["-c", cmd.config_file] if cmd.config_file else [])
    groups = [tokens] + [format_value(timm_flags()[k], v) for k, v in cmd.cli_values.items()]
    lines.append(" \\\n  ".join(" ".join(shlex.quote(t) for t in g) for g in groups if g))
    lines.append("# Not expressible with train.py's flags (what you get instead):")
    lines += [f"#  - {d}" for d in cmd.differences] or ["#  - nothing"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading a command back (tests, the importer): train.py's parser, rebuilt from the stored flags
# ---------------------------------------------------------------------------------------------
class _Kwargs(argparse.Action):
    """timm.utils.ParseKwargs: key=value items, each value ast.literal_eval'd, else kept as a string."""

    def __call__(self, parser, namespace, values, option_string=None):
        kw = {}
        for value in values:
            key, value = value.split("=", 1)
            try:
                kw[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kw[key] = str(value)
        setattr(namespace, self.dest, kw)


def timm_parser() -> argparse.ArgumentParser:
    """An argparse parser with train.py's flags (types, nargs, actions, defaults) as stored."""
    p = argparse.ArgumentParser(prog="train.py", add_help=False)
    types = {"int": int, "float": float, "str": str}
    for f in timm_flags().values():
        if f.action == "help":
            continue
        if f.action in ("store_true", "store_false"):
            p.add_argument(*f.options, dest=f.dest, action=f.action, default=f.default)
        elif f.action == "kwargs":
            p.add_argument(*f.options, dest=f.dest, nargs="*", action=_Kwargs, default={})
        else:
            nargs = None if f.nargs == "-" else (f.nargs if f.nargs in "?*+" else int(f.nargs))
            extra = {"const": "inductor"} if f.nargs == "?" else {}
            p.add_argument(*f.options, dest=f.dest, type=types.get(f.type, str), nargs=nargs, default=f.default, **extra)
    return p


def parse_command(text: str) -> Dict[str, Any]:
    """The values train.py would hold for a printed command (its -c heredoc applied as defaults)."""
    config: Dict[str, Any] = {}
    if "<<'EOF'" in text:
        block = text.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
        config = yaml.safe_load(block) or {}
    lines, command = text.splitlines(), []
    start = next(i for i, line in enumerate(lines) if "roadmap.timm_train" in line and not line.startswith("#"))
    for line in lines[start:]:
        command.append(line.rstrip("\\"))
        if not line.endswith("\\"):
            break
    tokens = shlex.split(" ".join(command))
    tokens = tokens[tokens.index("roadmap.timm_train") + 2:]
    if tokens[:1] == ["-c"]:
        tokens = tokens[2:]
    p = timm_parser()
    p.set_defaults(**config)
    return vars(p.parse_args(tokens))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def parse_cli(argv: Sequence[str]) -> Tuple[List[str], Target]:
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m roadmap.timm_command", description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="as for python -m roadmap: step=... scale=... key=value")
    ap.add_argument("--gpus", type=int, default=1, help="processes (GPUs) per node: >1 prints a torchrun command")
    ap.add_argument("--device", choices=("cuda", "cpu"), help="default: scale.device (auto: cuda, train.py's default)")
    ap.add_argument("--data-dir", help="train.py's --data-dir (default: our data root; a roadmap.timm_data folder "
                                       "gives train.py our prepared cache's pixels)")
    ap.add_argument("--train-py", default="train.py", help="path of timm's train.py")
    ap.add_argument("--python", default="python", help="the interpreter of a one-process command")
    ap.add_argument("--output", default="outputs/timm", help="train.py's --output")
    ap.add_argument("--experiment", help="train.py's --experiment (default: <step>-<scale>-seed<k>)")
    ap.add_argument("--timm-model", action="store_true", help="timm's own network of an end step at our widths "
                                                              "(resnet50 / convnext_tiny) instead of roadmap_<step>")
    a = ap.parse_args(argv)
    if a.gpus < 1:
        raise ConfigError(f"--gpus={a.gpus} is out of range; allowed: 1 or more")
    return a.overrides, Target(a.gpus, a.device, a.data_dir, a.train_py, a.python, a.output, a.experiment,
                               a.timm_model, extra)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        overrides, target = parse_cli(sys.argv[1:] if argv is None else argv)
        print(render(build(resolve_config(overrides), target)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
