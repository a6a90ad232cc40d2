"""Write a resized JPEG copy of an ImageFolder dataset (to carry Imagenette to a GPU machine).

The GPU machines receive at most 64 MiB per call, so Imagenette's 161 MB of 224-px JPEGs cannot
travel. A 73-px copy (the prepared-cache size for 64-px training at crop 0.875) re-encoded at
JPEG quality 90 is ~25 MB; on the GPU machine the prepared cache is built from it as usual.

    python experiments/shrink_imagefolder.py ../shared/data/imagenette .gpu/imagenette73 --size 73
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image


def shrink(job):
    src, dst, size, quality = job
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)  # shorter side -> size, as the cache's resize does
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC, reducing_gap=None)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, "JPEG", quality=quality)
    return dst.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--size", type=int, default=73)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    jobs = [(p, args.dst / p.relative_to(args.src), args.size, args.quality)
            for p in sorted(args.src.rglob("*")) if p.suffix.lower() in (".jpeg", ".jpg", ".png")]
    with ProcessPoolExecutor(os.cpu_count()) as ex:
        total = sum(ex.map(shrink, jobs, chunksize=64))
    print(f"{len(jobs)} images -> {args.dst} ({total / 2 ** 20:.1f} MiB)")


if __name__ == "__main__":
    main()
