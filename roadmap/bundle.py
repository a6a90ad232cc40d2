"""What travels to a lent GPU machine: `.device/` (wheels + Imagenette in a compact form).

    python -m roadmap.bundle build [--out .device]            # make device-bundle
    python -m roadmap.bundle size                             # what would travel, in MiB
    python -m roadmap.bundle unpack .device/imagenette-73px-webp90.npz /tmp/imagenette   # on the machine

The GPU machine has no Imagenette and no network, and at most 64 MiB travel with the working
tree. The data travels as the GPU proxy's prepared cache (every image decoded once, shorter side
resized to the cache size, centre-cropped: `roadmap.data.prepare_cache`) re-encoded as WebP at
quality 90, all images in one uncompressed .npz (bytes + offsets + labels + class names). On the
machine `unpack` writes them back as an ImageFolder (`train/<class>/<n>.webp`, same order as the
source), so training there runs the ordinary data path (`data.root=<folder>`): its cache builder
decodes each file once, and resizing an image that already has the cache size is the identity.

Wheels: the packages the device check imports that the machine lacks
(`experiments/device_wheels.txt`, versions pinned to this environment's); pure-Python ones that
PyPI has only as source archives are built here with `pip wheel --no-deps`.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WHEEL_LIST = REPO / "experiments" / "device_wheels.txt"
DEVICE_PACKAGES = REPO / "experiments" / "device_packages.txt"
GPU_SCALE = "proxy_gpu"
WEBP_QUALITY = 90
LIMIT_MIB = 64
GOAL_MIB = 60


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: Path) -> List[str]:
    """Non-empty lines without '#' comments."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# Data: the prepared cache as WebP in one .npz
# ---------------------------------------------------------------------------------------------
def encode(images: np.ndarray, quality: int = WEBP_QUALITY) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) -> (concatenated WebP bytes, offsets of N + 1)."""
    from PIL import Image

    chunks, offsets = [], [0]
    for img in images:
        b = io.BytesIO()
        Image.fromarray(np.asarray(img)).save(b, "WEBP", quality=quality, method=6)
        chunks.append(b.getvalue())
        offsets.append(offsets[-1] + len(chunks[-1]))
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), np.asarray(offsets, dtype=np.int64)


def pack_data(root: Path, out: Path, size: int, name: str = "imagenette", quality: int = WEBP_QUALITY,
              max_samples: Optional[Dict[str, int]] = None, workers: int = 2,
              cache_dir: Optional[Path] = None) -> Dict[str, object]:
    """Write `out` (.npz): for each split its prepared cache at `size` px, WebP-encoded. The files
    the cache refused (roadmap.images) are left out and named in info["<split>_refused"]."""
    from .data import prepare_cache
    from .images import printable

    arrays: Dict[str, np.ndarray] = {}
    info: Dict[str, object] = {"name": name, "size": size, "quality": quality, "source": str(root)}
    classes = None
    for split in ("train", "val"):
        ds, ci = prepare_cache(name, split, root / split, size, cache_dir or _cache_dir(),
                               (max_samples or {}).get(split), workers=workers)
        if classes is not None and ds.classes != classes:
            raise ValueError(f"class folders differ between train/ and {split}/")
        classes = ds.classes
        data, offsets = encode(ds.images, quality)
        arrays[f"{split}_bytes"], arrays[f"{split}_offsets"] = data, offsets
        arrays[f"{split}_labels"] = np.asarray(ds.labels, dtype=np.int16)
        info[f"{split}_images"] = len(ds)
        info[f"{split}_refused"] = {printable(f): r for f, r in ci.refused.items()}
    info["classes"] = classes
    arrays["meta"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # uncompressed: WebP does not compress further
    os.replace(tmp, out)
    return info


def _cache_dir() -> Path:
    return Path(os.environ["ROADMAP_CACHE"]) if os.environ.get("ROADMAP_CACHE") else Path.home() / ".cache" / "roadmap"


def read_meta(npz: Path) -> Dict[str, object]:
    with np.load(npz) as z:
        return json.loads(bytes(z["meta"]).decode())


def unpack_data(npz: Path, dest: Path) -> Dict[str, object]:
    """Write the packed images as an ImageFolder under `dest` (train/ and val/); atomic per call."""
    with np.load(npz) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        classes: List[str] = list(meta["classes"])  # type: ignore[arg-type]
        tmp = dest.parent / f".{dest.name}.unpack-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for split in ("train", "val"):
            data, offsets, labels = z[f"{split}_bytes"], z[f"{split}_offsets"], z[f"{split}_labels"]
            for c in classes:
                (tmp / split / c).mkdir(parents=True, exist_ok=True)
            for i, y in enumerate(labels.tolist()):
                (tmp / split / classes[y] / f"{i:06d}.webp").write_bytes(data[offsets[i]:offsets[i + 1]].tobytes())
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return meta


def gpu_cache_size(scale: str = GPU_SCALE) -> int:
    """The GPU proxy's prepared-cache side (timm's eval resize: img_size / crop_pct)."""
    from omegaconf import OmegaConf

    from .data import cache_size_for
    from .steps import compose_config

    sizes = set()
    for recipe in ("classic", "modern"):
        cfg = compose_config([f"scale={scale}", f"recipe={recipe}"])
        OmegaConf.resolve(cfg)
        sizes.add(cache_size_for(max(cfg.scale.img_size, cfg.scale.eval_img_size or 0), cfg.recipe.crop_pct))
    if len(sizes) != 1:
        raise ValueError(f"the recipes need different cache sizes at scale={scale}: {sorted(sizes)}")
    return sizes.pop()


# ---------------------------------------------------------------------------------------------
# Wheels
# ---------------------------------------------------------------------------------------------
def wheel_specs(names: Iterable[str]) -> List[str]:
    """NAME==VERSION of each package as installed here (the versions this project is tested with)."""
    return [f"{n}=={metadata.version(n)}" for n in names]


def fetch_wheels(specs: Sequence[str], dest: Path, log=print) -> List[Path]:
    """A cp312 manylinux / pure-Python wheel per spec from the registry; `pip wheel` from the
    source archive where the registry has no wheel (pure-Python packages only)."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    platform = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        platform += ["--platform", tag]
    for spec in specs:
        name = canonical(spec.split("==")[0]).replace("-", "_")
        if any(canonical(p.name.split("-")[0]) == canonical(name) for p in dest.glob("*.whl")):
            continue
        r = subprocess.run(pip + ["download", "--no-deps", *platform, "-d", str(dest), spec],
                           capture_output=True, text=True)
        if r.returncode != 0:
            log(f"  {spec}: no wheel on the registry; building one from its source archive")
            r = subprocess.run(pip + ["wheel", "--no-deps", "-w", str(dest), spec], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"could not get a wheel of {spec}: {r.stderr.strip().splitlines()[-1:]}")
    wheels = sorted(dest.glob("*.whl"))
    for w in wheels:  # a built wheel must be pure Python (it was built here, not for the machine)
        if not w.name.endswith(("-none-any.whl",)) and "cp312" not in w.name:
            raise RuntimeError(f"{w.name} is neither pure Python nor built for CPython 3.12")
    return wheels


# ---------------------------------------------------------------------------------------------
# What travels
# ---------------------------------------------------------------------------------------------
def travelling_files(repo: Path = REPO, extra: Sequence[str] = (".device",)) -> List[Path]:
    """Tracked + untracked-not-ignored files (what the device tool sends), plus `extra` paths."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout.decode().split("\0")
    files = [repo / f for f in out if f and (repo / f).is_file() and not (repo / f).is_symlink()]
    for e in extra:
        p = repo / e
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.is_file()]
        elif p.is_file():
            files.append(p)
    return files


def size_report(repo: Path = REPO, extra: Sequence[str] = (".device",)) -> Tuple[float, List[Tuple[str, float]]]:
    parts: Dict[str, int] = {}
    for f in travelling_files(repo, extra):
        rel = f.relative_to(repo).parts
        key = "/".join(rel[:2]) if rel[0] in extra else rel[0]
        parts[key] = parts.get(key, 0) + f.stat().st_size
    total = sum(parts.values()) / 2 ** 20
    return total, sorted(((k, v / 2 ** 20) for k, v in parts.items()), key=lambda kv: -kv[1])


def print_size(repo: Path = REPO) -> float:
    total, parts = size_report(repo)
    print("what would travel (tracked + untracked-not-ignored files + .device/):")
    for k, mib in parts:
        print(f"  {mib:8.2f} MiB  {k}")
    verdict = "ok" if total <= GOAL_MIB else ("over the 60 MiB goal" if total <= LIMIT_MIB else "OVER THE 64 MiB LIMIT")
    print(f"  {total:8.2f} MiB  in all ({verdict}; limit {LIMIT_MIB} MiB)")
    return total


def build(out: Path, data_root: Path, log=print) -> None:
    t0 = time.perf_counter()
    wheels_dir = out / "wheels"
    names = read_list(WHEEL_LIST)
    log(f"wheels ({len(names)}): {', '.join(wheel_specs(names))}")
    wheels = fetch_wheels(wheel_specs(names), wheels_dir, log)
    keep = {canonical(n) for n in names}
    for w in wheels:  # a stale wheel (another version or a dropped package) would travel too
        dist, version = w.name.split("-")[:2]
        if canonical(dist) not in keep or version != metadata.version(dist.replace("_", "-")):
            w.unlink()
    size = gpu_cache_size()
    npz = out / f"imagenette-{size}px-webp{WEBP_QUALITY}.npz"
    for old in out.glob("imagenette-*.npz"):
        if old != npz:
            old.unlink()
    if not npz.exists():
        log(f"data: Imagenette's prepared cache at {size} px as WebP q{WEBP_QUALITY} -> {npz}")
        info = pack_data(data_root, npz, size)
        log(f"  {info['train_images']} train + {info['val_images']} val images")
        from .images import naming

        for split in ("train", "val"):
            if info[f"{split}_refused"]:
                log(f"  {split}: {len(info[f'{split}_refused'])} refused and left out: {naming(info[f'{split}_refused'])}")
    from .train import git_commit

    (out / "MANIFEST.json").write_text(json.dumps({
        "wheels": sorted(w.name for w in wheels_dir.glob("*.whl")), "data": npz.name, "cache_size": size,
        "scale": GPU_SCALE, "commit": git_commit(), "built": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
    log(f"built {out} in {time.perf_counter() - t0:.0f} s")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.bundle", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="wheels + compact Imagenette into .device/, then the travelling size")
    b.add_argument("--out", type=Path, default=REPO / ".device")
    b.add_argument("--data-root", type=Path, default=None, help="Imagenette (default: ../shared/data/imagenette)")
    sub.add_parser("size", help="the size of everything that would travel")
    u = sub.add_parser("unpack", help="packed images -> ImageFolder")
    u.add_argument("npz", type=Path)
    u.add_argument("dest", type=Path)
    pk = sub.add_parser("pack", help="an ImageFolder's prepared cache -> .npz (WebP)")
    pk.add_argument("root", type=Path)
    pk.add_argument("out", type=Path)
    pk.add_argument("--size", type=int, default=None, help="cache side in px (default: the GPU proxy's)")
    pk.add_argument("--max-train", type=int, default=None)
    pk.add_argument("--max-val", type=int, default=None)
    args = p.parse_args(argv)
    if args.cmd == "build":
        root = args.data_root
        if root is None:
            from .data import resolve_root
            from .steps import compose_config

            root = resolve_root(compose_config(["data=imagenette"]).data)
        build(args.out, root)
        return 0 if print_size() <= LIMIT_MIB else 1
    if args.cmd == "size":
        return 0 if print_size() <= LIMIT_MIB else 1
    if args.cmd == "pack":
        info = pack_data(args.root, args.out, args.size or gpu_cache_size(),
                         max_samples={"train": args.max_train, "val": args.max_val})
        print(json.dumps({k: v for k, v in info.items() if k != "classes"}))
        return 0
    t0 = time.perf_counter()
    meta = unpack_data(args.npz, args.dest)
    print(f"unpacked {meta['train_images']} train + {meta['val_images']} val images ({meta['size']} px) "
          f"into {args.dest} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
