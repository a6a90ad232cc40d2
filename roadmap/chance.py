"""python -m roadmap.chance <overrides>: the chance loss of a config's recipe, measured on real batches.

The health rule (roadmap/health.py, docs/health.md) compares a run's training loss with the chance loss.
Under Mixup/CutMix and label smoothing the targets are soft, so the loss of a constant prediction is
measured here rather than guessed: the recipe's timm Mixup applied to real training batches, as
train_one_epoch applies it, and target_losses on the pooled targets. Its own module because it needs
train.py's Mixup/loss factory, and train.py runs the health rule (health.py imports nothing of train).

    python -m roadmap.chance step=modern_recipe scale=proxy64
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Sequence

from .health import target_losses


def measure_chance(cfg: Any, batches: int = 40) -> Dict[str, Any]:
    """The chance loss of `cfg`'s recipe, measured: its timm Mixup/CutMix (with label smoothing) applied
    to `batches` real training batches of its data, as train_one_epoch applies it; the targets of every
    batch are pooled (see target_losses). Without Mixup the targets are the smoothed one-hot labels."""
    import torch

    from .config import apply_scale_augment, validate
    from .data import build_data, discover_num_classes
    from .train import build_mixup_and_loss, seed_all

    discover_num_classes(cfg)
    from omegaconf import OmegaConf

    OmegaConf.resolve(cfg)
    validate(cfg)
    apply_scale_augment(cfg)
    seed_all(cfg.seed)
    data = build_data(cfg, log_fn=lambda *_: None)
    k = data.num_classes
    mixup, _ = build_mixup_and_loss(cfg.recipe, k)
    pooled = []
    for i, (x, y) in enumerate(data.train):
        if i >= batches:
            break
        if mixup is not None:
            x, y = mixup(x, y)
        else:
            eps = float(cfg.recipe.smoothing)
            y = torch.full((len(y), k), eps / k).scatter_(1, y[:, None], 1 - eps + eps / k)
        pooled.append(y)
    out = target_losses(torch.cat(pooled))
    rec = cfg.recipe
    out.update({"batches": len(pooled), "batch_size": int(cfg.scale.batch_size), "num_classes": k,
                "mixup": float(rec.mixup), "cutmix": float(rec.cutmix), "mixup_prob": float(rec.mixup_prob),
                "switch_prob": float(rec.mixup_switch_prob), "smoothing": float(rec.smoothing),
                "img_size": int(cfg.scale.img_size)})
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.chance",
                                description="The health rule's chance loss, measured on real batches of a config "
                                            "(docs/health.md). Verdicts of runs: python -m roadmap.report.health")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. step=modern_recipe scale=proxy64")
    p.add_argument("--batches", type=int, default=40)
    args = p.parse_args(argv)
    from .config import ConfigError
    from .steps import compose_config

    try:
        m = measure_chance(compose_config(["logger=none", *args.overrides]), args.batches)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{m['samples']} targets ({m['batches']} batches of {m['batch_size']}, {m['img_size']} px, {m['num_classes']} "
          f"classes; mixup {m['mixup']:g}, cutmix {m['cutmix']:g}, prob {m['mixup_prob']:g}, switch "
          f"{m['switch_prob']:g}, smoothing {m['smoothing']:g})")
    print(f"  constant uniform prediction: {m['uniform']:.4f} nats (ln {m['num_classes']} = {m['ln_k']:.4f})")
    print(f"  best constant prediction (the mean target): {m['best_constant']:.4f} nats")
    print(f"  perfect prediction (mean entropy of the targets; the floor): {m['floor']:.4f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
