"""`python -m roadmap.timm_data DIR [overrides]`: the images our prepared cache holds, as an ImageFolder
(PNG, lossless) that timm's `train.py --data-dir DIR --train-split train --val-split val` reads, so both
loops train and evaluate on the same pixels.

    python -m roadmap.timm_data outputs/timm-data/imagenette-73px step=modern_recipe scale=proxy64

The overrides are those of `python -m roadmap`: they pick the cache the run would use (dataset, image
size, crop ratio, the val interpolation of the recipe, a scale's class-balanced subset); it is built
first if absent. Our cache stores every image decoded once, its shorter side resized to
floor(img_size / crop_pct) px (73 for 64-px training at 0.875) and centre-cropped square; train.py
decoding the original JPEGs would crop from the full, non-square images instead.

DIR/train/<class>/<n>.png and DIR/val/<class>/<n>.png, class folders in our class order (sorted names,
as timm's folder reader sorts them), and DIR/roadmap_timm_data.json recording which cache they come
from. The folder is written under a temporary name and renamed when complete; a DIR that already holds
the same cache is left as it is, one holding anything else is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
from PIL import Image

from .config import ConfigError
from .files import atomic_write_text
from .timm_differences import MARKER

FOLDER_DATA = ("imagenette", "imagenet", "imagefolder")


def record_of(cfg: Any, train: Any, val: Any, info: Dict[str, Any]) -> Dict[str, Any]:
    """What the folder holds: the cache files it was written from, the size, the subset, the classes."""
    return {"dataset": cfg.data.name, "root": info.get("root"), "size": info[f"cache_{cfg.data.train_split}"]["size"],
            "val_interpolation": cfg.recipe.eval_interpolation,
            "train_cache": Path(info[f"cache_{cfg.data.train_split}"]["path"]).name,
            "val_cache": Path(info[f"cache_{cfg.data.val_split}"]["path"]).name,
            "train_images": len(train), "val_images": len(val),
            "train_images_wanted": cfg.scale.max_train_samples, "val_images_wanted": cfg.scale.max_val_samples,
            "classes": list(train.classes), "format": "png"}


def write_split(images: Any, out: Path, classes: Sequence[str]) -> int:
    """Every image of an ArrayImages (the memory-mapped cache) as out/<class>/<n>.png."""
    for c in classes:
        (out / c).mkdir(parents=True, exist_ok=True)
    for i in range(len(images)):
        label = int(images.labels[i])
        Image.fromarray(np.asarray(images.images[i])).save(out / classes[label] / f"{i:06d}.png", compress_level=1)
    return len(images)


def same_folder(out: Path, record: Dict[str, Any]) -> Optional[bool]:
    """None: no DIR; True: DIR holds this cache; False: DIR holds something else."""
    if not out.exists():
        return None
    try:
        old = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    keys = ("size", "val_interpolation", "train_cache", "val_cache", "train_images", "val_images")
    return all(old.get(k) == record.get(k) for k in keys)


def export(cfg: Any, out: Path, log=print) -> Dict[str, Any]:
    """Write (or find) the ImageFolder of the cache `cfg` trains on; return its record."""
    from .data import base_datasets

    if cfg.data.name not in FOLDER_DATA or not cfg.data.cache:
        raise ConfigError(f"data={cfg.data.name} (cache={cfg.data.cache}) has no prepared cache to export; allowed: "
                          f"{', '.join(FOLDER_DATA)} with data.cache=true (otherwise give train.py data.root itself)")
    train, val, info = base_datasets(cfg, log_fn=log)
    record = record_of(cfg, train, val, info)
    state = same_folder(out, record)
    if state is True:
        log(f"{out} already holds {record['train_cache']} and {record['val_cache']}")
        return record
    if state is False:
        raise ConfigError(f"{out} exists and holds other images (no matching {MARKER}); allowed: a new folder, or the "
                          f"folder this command wrote before")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        write_split(train, tmp / cfg.data.train_split, record["classes"])
        write_split(val, tmp / cfg.data.val_split, record["classes"])
        record["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_text(tmp / MARKER, json.dumps(record, indent=1) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {record['train_images']} + {record['val_images']} images ({record['size']} px PNG) to {out} "
        f"in {record['seconds']} s")
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .timm_command import resolve_config

    ap = argparse.ArgumentParser(prog="python -m roadmap.timm_data", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="the folder to write (DIR/train, DIR/val)")
    ap.add_argument("overrides", nargs="*", help="as for python -m roadmap: step=... scale=... key=value")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        export(resolve_config(a.overrides), a.dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
