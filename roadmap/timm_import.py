"""`python -m roadmap.timm_import TIMM_RUN_DIR RUN_DIR [overrides] [--timm-model] [--gpus N]`: a finished
timm `train.py` run as one of our run directories, so `python -m roadmap.report` and
`roadmap.report.spread` read it like ours.

    python -m roadmap.timm_import outputs/timm/modern_recipe-proxy64-seed0 \\
        results/peer-check/timm-registry/runs/modern_recipe/seed0 step=modern_recipe scale=proxy64 seed=0

TIMM_RUN_DIR is train.py's output folder (`--output`/`--experiment`): its args.yaml (every argument as
train.py saw it) and summary.csv (one row per evaluated epoch, epochs from 0). The overrides are those
the command was printed for (`python -m roadmap.timm_command`, same options): every value that can
change a result (model and its kwargs, lr, schedule, augmentation, batch, seed, ...) is checked against
args.yaml first, and a run of another config is refused in one line naming the first value that
differs. The run directory gets what ours hold: config.yaml (our config of the run), history.csv
(epoch from 1, train_loss, lr, top1, top5, val_loss) and metrics.json (the last epoch, last/best top-1,
params and GFLOPs of the network train.py built, and `loop`: timm's script, commit, model, source
folder), plus timm/args.yaml and timm/summary.csv as they were. An unfinished run (fewer epochs in
summary.csv than the schedule's) is refused.
"""
from __future__ import annotations

import argparse
import csv
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf

from .config import ConfigError, to_container
from .files import atomic_write_text, write_csv, write_json

# train.py arguments that do not change what is trained: where things are, how fast, how it is logged
NOT_RESULT = {"data_dir", "output", "experiment", "workers", "device", "channels_last", "amp", "amp_dtype",
              "torchcompile", "validation_batch_size", "dataset_download", "initial_checkpoint"}


def read_summary(path: Path) -> List[Dict[str, str]]:
    """summary.csv's rows, one per epoch (a resumed run repeats its header and may repeat epochs: the last wins)."""
    rows: Dict[int, Dict[str, str]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header: Optional[List[str]] = None
        for line in reader:
            if line and line[0] == "epoch":
                header = line
            elif line and header:
                row = dict(zip(header, line))
                rows[int(float(row["epoch"]))] = row
    return [rows[e] for e in sorted(rows)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def check_args(args: Dict[str, Any], expected: Dict[str, Any], what: str) -> None:
    """Every result-changing value printed for `what` equals the run's (args.yaml); else one line."""
    for k, v in expected.items():
        if k in NOT_RESULT:
            continue
        if not _same(args.get(k), v):
            raise ConfigError(f"args.yaml has {k}={args.get(k)!r} where {what} gives {k}={v!r}; import it with "
                              f"the overrides it was printed for")


def history_rows(summary: List[Dict[str, str]]) -> List[Dict[str, Any]]:
    def num(x: Optional[str]) -> Optional[float]:
        return round(float(x), 6) if x not in (None, "") else None

    return [{"epoch": int(float(r["epoch"])) + 1, "train_loss": num(r.get("train_loss")), "lr": num(r.get("lr")),
             "top1": num(r.get("eval_top1")), "top5": num(r.get("eval_top5")), "val_loss": num(r.get("eval_loss"))}
            for r in summary]


def network_size(args: Dict[str, Any], img_size: int) -> Dict[str, Any]:
    """Params and GFLOPs of the network train.py built, at the run's size and at the paper's (224 px, 1000 classes)."""
    import timm

    import roadmap  # noqa: F401  (roadmap_<step> in timm's registry)
    from .measure import count_gflops, count_params

    kwargs = dict(args.get("model_kwargs") or {})
    model = timm.create_model(args["model"], num_classes=args["num_classes"], **kwargs)
    full = {k: v for k, v in kwargs.items() if k not in ("width_mult", "channels", "dims")}
    paper = timm.create_model(args["model"], num_classes=1000, **full)
    return {"params": count_params(model), "gflops": round(count_gflops(model, img_size), 4),
            "params_224": count_params(paper), "gflops_224": round(count_gflops(paper, 224), 4)}


def metrics_of(cfg: Any, args: Dict[str, Any], history: List[Dict[str, Any]], timm_dir: Path, epochs: int,
               gpus: int) -> Dict[str, Any]:
    import timm
    import torch

    from .steps import step_info
    from .timm_command import timm_source
    from .timm_differences import timm_data_folder
    from .train import best_and_last

    final, info = history[-1], step_info(cfg.step)
    wall = timm_dir / "wall_seconds.txt"
    folder = timm_data_folder(str(args.get("data_dir") or ""))
    return {
        "step": cfg.step, "step_index": info["index"], "branch": info["branch"], "group": info["group"],
        "label": info["label"], "roadmap": info["roadmap"], "ablation": cfg.ablation, "regime": cfg.regime.name,
        "scale": cfg.scale.name, "dataset": cfg.data.name, "seed": cfg.seed, "status": "finished",
        "top1": final["top1"], "top5": final["top5"], "val_loss": final["val_loss"], **best_and_last(history),
        "train_loss": final["train_loss"], "epochs": epochs, "epochs_done": len(history),
        **network_size(args, int(args["img_size"])), "img_size": int(args["img_size"]),
        "wall_seconds": float(wall.read_text().strip()) if wall.is_file() else None,
        "device": args.get("device"), "world_size": gpus, "global_batch": int(args["batch_size"]) * gpus *
        int(args["grad_accum_steps"]), "grad_accum": int(args["grad_accum_steps"]), "lr": float(args["lr"]),
        "train_images": folder.get("train_images"), "val_images": folder.get("val_images"),
        "loop": {"name": "timm train.py", "repo": "huggingface/pytorch-image-models", "commit": timm_source()["commit"],
                 "model": args["model"], "model_kwargs": args.get("model_kwargs") or {}, "source": str(timm_dir)},
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "imported_at": time.strftime("%Y-%m-%d %H:%M:%S"), "config": to_container(cfg),
    }


def import_run(timm_dir: Path, run_dir: Path, cfg: Any, target: Any) -> Dict[str, Any]:
    from .timm_command import build

    args = yaml.safe_load((timm_dir / "args.yaml").read_text())
    values = build(cfg, target).values
    what = f"step={cfg.step} scale={cfg.scale.name} seed={cfg.seed}" + (" --timm-model" if target.timm_model else "")
    check_args(args, values, what)
    history = history_rows(read_summary(timm_dir / "summary.csv"))
    epochs = int(cfg.scale.epochs or cfg.recipe.epochs)
    if not history or history[-1]["epoch"] != epochs:
        raise ConfigError(f"{timm_dir / 'summary.csv'} ends at epoch {history[-1]['epoch'] if history else 0} of "
                          f"{epochs}: the run is unfinished; allowed: a finished run")
    metrics = metrics_of(cfg, args, history, timm_dir, epochs, target.gpus)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "timm" / "args.yaml", (timm_dir / "args.yaml").read_text())
    atomic_write_text(run_dir / "timm" / "summary.csv", (timm_dir / "summary.csv").read_text())
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_csv(run_dir / "history.csv", history, list(history[0]))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .timm_command import Target, resolve_config

    ap = argparse.ArgumentParser(prog="python -m roadmap.timm_import", description=__doc__.split("\n\n")[0])
    ap.add_argument("timm_dir", type=Path, help="train.py's output folder (args.yaml, summary.csv)")
    ap.add_argument("run_dir", type=Path, help="the run directory to write (e.g. results/<study>/runs/<step>/seed<k>)")
    ap.add_argument("overrides", nargs="*", help="the overrides the command was printed for: step=... scale=... seed=...")
    ap.add_argument("--timm-model", action="store_true", help="the run trained timm's own network (timm_command --timm-model)")
    ap.add_argument("--gpus", type=int, default=1, help="processes the run used (timm_command --gpus)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for name in ("args.yaml", "summary.csv"):
            if not (a.timm_dir / name).is_file():
                raise ConfigError(f"{a.timm_dir / name} does not exist; allowed: train.py's output folder of one run")
        m = import_run(a.timm_dir, a.run_dir, resolve_config(a.overrides), Target(gpus=a.gpus, timm_model=a.timm_model))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {a.timm_dir} -> {a.run_dir}/metrics.json (top-1 {m['top1']:.2f} at epoch {m['epochs_done']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
