"""Datasets, timm transforms, the prepared uint8 cache, and loaders.

Data flow: a *base* dataset yields (PIL RGB image, label) -- from JPEG folders, from the prepared
cache (decoded and resized once, memory-mapped), from CIFAR or from random pixels -- and
`Augmented` applies timm's transform (RandomResizedCrop, flip, RandAugment, normalisation,
random erasing; or resize + centre crop for eval). Mixup/CutMix work on batches in the train loop.

Every sample's augmentation is seeded by (seed, epoch, index): results do not depend on the number
of loader workers, and a resumed run sees exactly the images an uninterrupted run would.

A file that cannot be used as an image is refused (roadmap.images: decoders, PIL's guards, odd
modes, the file system, names), skipped and counted per split (`skipped_by_split` in metrics.json),
named in one log line and listed in the run directory's refused_images.tsv: the cache finds them all
when it decodes everything once (the summary line names them); the folder loader finds each when it
first reads it. Only a class or a split left without a usable file ends the run, with one line naming it.

The prepared cache is checked before it is memory-mapped (file sizes and .npy headers against its
metadata, digests of sampled blocks): a damaged one (cut short, swapped, zero-filled) is rebuilt
from the images with one warning naming the file, by one process while the others wait for it. A
cache that could not be written completely (full disk: files.DiskFull) leaves nothing behind.

ImageNet-1k (`data=imagenet`) is read in the layouts people keep: ImageFolder train/ and val/; a
flat val/ with the devkit's ILSVRC2012_validation_ground_truth.txt and its meta.mat (the devkit's
own class ids, mapped to WordNet ids); a flat val/ with Kaggle's LOC_val_solution.csv (also the
Kaggle tree ILSVRC/Data/CLS-LOC/). Class indices are always the sorted train/ folder names, as
torchvision's and timm's ImageNet weights expect.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import random
import shlex
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .config import ConfigError
from .device_data import build_device_data
from .faults import injected_write_fault
from .files import atomic_write_text, reporting_full_disk, space_error
from .images import Refused, append_refused, naming, printable, read_refused, read_rgb, write_refused
from .loading import Data, EpochSampler, cache_size_for
from .rundir import ignore_stop_signals_in_worker

log = logging.getLogger(__name__)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's, any case
CACHE_VERSION = 1


class DataError(ConfigError):
    """The data cannot be found or read. One line for the user."""

    def __init__(self, message: str = "") -> None:
        # Raised in a DataLoader worker, it reaches the training process as DataError("Caught DataError
        # in DataLoader worker process 0.\nOriginal Traceback ...\nroadmap.data.DataError: <message>"):
        # the one line is the traceback's last one.
        if message.startswith("Caught DataError") and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# Where the data is
# ---------------------------------------------------------------------------------------------
def _shared_candidates(name: str) -> List[Path]:
    """`../shared/data/<name>` seen from the working directory and from the project checkout."""
    here = Path.cwd().resolve()
    repo = Path(__file__).resolve().parent.parent
    seen, out = set(), []
    for start in (here, repo):
        for d in (start, *start.parents):
            p = d.parent / "shared" / "data" / name if d.name else None
            if p is not None and p not in seen:
                seen.add(p)
                out.append(p)
    return out


def resolve_root(data: Any) -> Optional[Path]:
    """data.root, else $ROADMAP_DATA/<name>, else ../shared/data/<name> beside the project."""
    if data.name == "synthetic":
        return None
    if data.root:
        return Path(os.path.expanduser(str(data.root)))
    if os.environ.get("ROADMAP_DATA"):
        return Path(os.environ["ROADMAP_DATA"]) / data.name
    for p in _shared_candidates(data.name):
        if p.is_dir():
            return p
    return Path.home() / ".cache" / "roadmap" / "data" / data.name


def ensure_imagenette(root: Path) -> None:
    """Download fast.ai's Imagenette (320 px, MD5-checked by torchvision) and unpack atomically."""
    if (root / "train").is_dir():
        return
    from torchvision.datasets import Imagenette

    tmp = root.parent / f".{root.name}.download-{os.getpid()}"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        Imagenette(str(tmp), split="train", size="320px", download=True)
        os.replace(tmp / "imagenette2-320", root)
    except Exception as e:  # no network, checksum mismatch, disk full...
        raise DataError(f"data.root={str(root)!r} has no Imagenette and downloading it failed "
                        f"({type(e).__name__}); put imagenette2 there (train/, val/ with class folders) "
                        f"or set data.root / $ROADMAP_DATA") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Base datasets: (PIL RGB image, label)
# ---------------------------------------------------------------------------------------------
def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link that loops (ELOOP) or that this user may not follow: not a folder
        return False


def _entries(folder: Path) -> List[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except OSError as e:
        raise DataError(f"folder {printable(str(folder))} cannot be listed: {e.strerror} "
                        f"({errno.errorcode.get(e.errno or 0, e.errno)})") from None


def scan_folder(split_dir: Path) -> Tuple[List[str], List[Tuple[str, int]]]:
    """ImageFolder's class order (sorted folder names) and its (path, label) list."""
    if not split_dir.is_dir():
        raise DataError(f"data split folder {str(split_dir)!r} does not exist; expected <root>/{split_dir.name}/<class>/<image>")
    classes = sorted(d.name for d in _entries(split_dir) if _is_dir(d))
    samples = []
    for label, c in enumerate(classes):
        for f in sorted(_entries(split_dir / c), key=lambda e: e.name):
            # as ImageFolder: extension compared case-insensitively, links listed even when dangling or
            # looping (the reader then refuses them, naming why: not silently dropped)
            if not _is_dir(f) and f.name.lower().endswith(IMAGE_EXTS):
                samples.append((f.path, label))
    if not samples:
        raise DataError(f"no images in {str(split_dir)!r}; expected <class>/<image>{IMAGE_EXTS[0]} files inside")
    return classes, samples


DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
KAGGLE_LABELS = "LOC_val_solution.csv"
KAGGLE_TREE = Path("ILSVRC") / "Data" / "CLS-LOC"


def imagenet_image_root(root: Path) -> Path:
    """The folder holding train/ and val/: the root itself, or Kaggle's ILSVRC/Data/CLS-LOC/ under it."""
    return root / KAGGLE_TREE if (root / KAGGLE_TREE).is_dir() and not (root / "train").is_dir() else root


def _is_flat(split_dir: Path) -> bool:
    return split_dir.is_dir() and any(not _is_dir(e) and e.name.lower().endswith(IMAGE_EXTS) for e in _entries(split_dir))


def _label_files(data: Any, root: Path, split_dir: Path) -> List[Path]:
    if getattr(data, "val_labels", None):
        p = Path(os.path.expanduser(str(data.val_labels)))
        return [p if p.is_absolute() else root / p]
    dirs = [root, split_dir, split_dir.parent, root / "ILSVRC2012_devkit_t12" / "data", root / "devkit" / "data"]
    names = (KAGGLE_LABELS, DEVKIT_LABELS)
    return [d / n for d in dict.fromkeys(dirs) for n in names if (d / n).is_file()]


def _devkit_wnids(meta: Path) -> Dict[int, str]:
    """ILSVRC2012_ID -> WordNet id of the 1000 leaf synsets in the devkit's meta.mat."""
    from scipy.io import loadmat

    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    return {int(i): str(w) for i, w, c in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"])
            if int(c) == 0}


def _val_labels(labels: Path) -> Dict[str, str]:
    """Image stem -> WordNet id, from LOC_val_solution.csv or the devkit's ground truth + meta.mat."""
    if labels.suffix == ".csv":  # ImageId,PredictionString ("n01751748 x y x y n01751748 ..." boxes)
        import csv

        with open(labels, newline="") as f:
            return {r["ImageId"]: r["PredictionString"].split()[0] for r in csv.DictReader(f)}
    meta = next((p for p in (labels.parent / DEVKIT_META, labels.parent.parent / "data" / DEVKIT_META) if p.is_file()), None)
    if meta is None:
        raise DataError(f"{labels.name} holds the devkit's class ids; their WordNet ids are in the devkit's "
                        f"{DEVKIT_META}, expected beside it in {labels.parent}")
    wnid = _devkit_wnids(meta)
    ids = [int(line) for line in labels.read_text().split()]
    unknown = sorted(set(ids) - set(wnid))
    if unknown:
        raise DataError(f"{labels} uses class id {unknown[0]}, which {meta} has no leaf synset for; "
                        f"use the ground truth and meta.mat of the same devkit")
    return {f"ILSVRC2012_val_{n:08d}": wnid[i] for n, i in enumerate(ids, start=1)}


def scan_imagenet(data: Any, root: Path, split: str) -> Tuple[List[str], List[Tuple[str, int]]]:
    """ImageNet's (classes, samples) for a split in any of the layouts in the module docstring."""
    base = imagenet_image_root(root)
    split_dir = base / split
    if not _is_flat(split_dir):
        return scan_folder(split_dir)
    classes = sorted(d.name for d in _entries(base / data.train_split) if _is_dir(d)) \
        if (base / data.train_split).is_dir() else []
    found = _label_files(data, root, split_dir)
    if getattr(data, "val_labels", None) and not found[0].is_file():
        raise DataError(f"data.val_labels={str(found[0])!r} does not exist; allowed: a {KAGGLE_LABELS} or a "
                        f"{DEVKIT_LABELS} (with the devkit's {DEVKIT_META} beside it)")
    if not found:
        raise DataError(f"{str(split_dir)!r} holds images without class folders and no labels file was found; put "
                        f"{KAGGLE_LABELS} or the devkit's {DEVKIT_LABELS} (+ {DEVKIT_META}) in {str(root)!r}, "
                        f"or set data.val_labels")
    labels = _val_labels(found[0])
    index = {c: i for i, c in enumerate(classes)}
    samples, missing, unknown = [], [], set()
    for e in sorted(_entries(split_dir), key=lambda e: e.name):
        if _is_dir(e) or not e.name.lower().endswith(IMAGE_EXTS):
            continue
        w = labels.get(os.path.splitext(e.name)[0])
        if w is None:
            missing.append(e.name)
        elif w not in index:
            unknown.add(w)
        else:
            samples.append((e.path, index[w]))
    if missing:
        raise DataError(f"{len(missing)} images in {str(split_dir)!r} have no label in {found[0]} (e.g. {missing[0]})")
    if unknown:
        raise DataError(f"{found[0]} names classes that {str(base / data.train_split)!r} has no folder for "
                        f"(e.g. {sorted(unknown)[0]})")
    if not samples:
        raise DataError(f"no images in {str(split_dir)!r}")
    return classes, samples


def balanced_subset(labels: Sequence[int], n: Optional[int]) -> List[int]:
    """The first ceil(n / classes) indices of every class (deterministic), or all of them."""
    if not n or n >= len(labels):
        return list(range(len(labels)))
    per_class = math.ceil(n / (max(labels) + 1))
    counts: Dict[int, int] = {}
    keep = []
    for i, y in enumerate(labels):
        if counts.get(y, 0) < per_class:
            counts[y] = counts.get(y, 0) + 1
            keep.append(i)
    return keep


def emptied_error(split_dir: Path, classes: Sequence[str], samples: Sequence[Tuple[str, int]],
                  kept_labels: Sequence[int], refused: Mapping[str, str], where: str) -> Optional[DataError]:
    """The one-line error when refusals left the split, or a class of it, without a usable file
    (None if not). `refused`: {sample path: reason}, for the example the line gives."""
    if not refused:
        return None
    left = {int(y) for y in kept_labels}
    emptied = sorted({y for _, y in samples} - left)
    if left and not emptied:
        return None
    if left:
        what = f"class {printable(classes[emptied[0]])!r} in {printable(str(split_dir))}"
        files = [p for p, y in samples if y == emptied[0]]
    else:
        what, files = printable(str(split_dir)), [p for p, _ in samples]
    eg = next((f", e.g. {printable(os.path.relpath(p, split_dir))}: {refused[p]}" for p in files if p in refused), "")
    return DataError(f"every image of {what} was refused ({len(files)} files{eg}; listed in {where}); repair or remove "
                     f"them: a class or a split without a usable image cannot be trained or evaluated on")


class FolderImages(Dataset):
    """Image files decoded on every read. A refused file (roadmap.images) is skipped: the next usable
    one is read in its place. Which files were refused is shared by every loader process (a flag per
    file), so each is named once, in one log line, and appended to `listing`; a class or the split
    left without a usable file stops the run with one line naming it (emptied_error)."""

    def __init__(self, samples: List[Tuple[str, int]], classes: List[str], split: str = "train",
                 split_dir: Optional[Path] = None, listing: Optional[Path] = None):
        self.samples, self.classes = samples, classes
        self.targets = [y for _, y in samples]
        self._labels = np.asarray(self.targets, dtype=np.int64)
        self.split, self.listing = split, listing
        self.split_dir = split_dir or Path(samples[0][0]).parent.parent
        self.refused_flags = mp.RawArray("b", len(samples))  # shared with forked loader workers
        self.lock = mp.Lock()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[Image.Image, int]:
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            if self.refused_flags[j]:
                continue
            path, y = self.samples[j]
            try:
                return read_rgb(path), y
            except Refused as e:
                self._refuse(j, str(e))
        raise DataError(f"no usable image in {self.split_dir}")  # _refuse has said which class emptied first

    def _refuse(self, j: int, reason: str) -> None:
        path = os.path.abspath(self.samples[j][0])
        with self.lock:
            if self.refused_flags[j]:  # met by another loader process meanwhile
                return
            self.refused_flags[j] = 1
            if self.listing is not None:
                append_refused(self.listing, self.split, path, reason)
        log.warning("refused image %s: %s; skipped, the next usable image is read in its place%s", printable(path),
                    reason, f"; listed in {self.listing}" if self.listing else "")
        flags = np.frombuffer(self.refused_flags, dtype=np.int8).astype(bool)
        if flags[self._labels == self._labels[j]].all():  # the last file of its class
            kept = self._labels[~flags].tolist()
            raise emptied_error(self.split_dir, self.classes, self.samples, kept, {self.samples[j][0]: reason},
                                str(self.listing or "the log"))  # type: ignore[misc]

    @property
    def skipped_files(self) -> int:
        return int(np.frombuffer(self.refused_flags, dtype=np.int8).sum())


class ArrayImages(Dataset):
    """uint8 (N, H, W, 3) array (usually a memory map of the prepared cache) as PIL images;
    `refused`: the source files left out ({relative path: reason})."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: List[str],
                 refused: Optional[Dict[str, str]] = None):
        self.images, self.labels, self.classes = images, labels, classes
        self.targets = labels.tolist()
        self.refused = dict(refused or {})
        self.skipped_files = len(self.refused)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[Image.Image, int]:
        return Image.fromarray(np.asarray(self.images[i])), int(self.labels[i])


class RandomImages(Dataset):
    """Random pixels with random labels, the same for a given index (smoke tests only)."""

    def __init__(self, n: int, size: int, num_classes: int, seed: int = 0):
        self.n, self.size, self.seed = n, size, seed
        g = np.random.default_rng(seed)
        self.targets = g.integers(0, num_classes, n).tolist()
        self.classes = [str(c) for c in range(num_classes)]
        self.skipped_files = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Tuple[Image.Image, int]:
        arr = np.random.default_rng(self.seed * 1_000_003 + i).integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
        return Image.fromarray(arr), self.targets[i]


# ---------------------------------------------------------------------------------------------
# Prepared cache: decode + resize once to uint8 at the training size (+ crop margin), memory-mapped
# ---------------------------------------------------------------------------------------------
def fingerprint(samples: List[Tuple[str, int]], root: Path) -> str:
    """Hash of every file's relative path, size and mtime: any change in the source changes it."""
    h = hashlib.sha1()
    for path, y in samples:
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:  # missing (e.g. a dangling link): part of the key, so fixing it rebuilds
            size, mtime = -1, -1
        h.update(f"{os.path.relpath(path, root)}\0{y}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def _pool_worker_init() -> None:
    # A forked worker inherits its parent's signal handlers; under submitit (SLURM / local launcher)
    # that handler ignores SIGTERM, and Pool.terminate() would then wait forever for the worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the parent


def _decode_resized(args: Tuple[str, int, str]) -> Union[np.ndarray, str]:
    """Shorter side -> size (bicubic or bilinear, antialiased), centre crop size x size; or why the
    file is refused (roadmap.images)."""
    path, size, interpolation = args
    try:
        img = read_rgb(path, draft=size)  # JPEG: decoded at a reduced scale when possible
    except Refused as e:
        return str(e)
    try:
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))),
                         Image.BILINEAR if interpolation == "bilinear" else Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except Exception as e:  # resizing a decoded image (memory): refused like a decode error
        return f"{type(e).__name__}: {e}"[:160]


@dataclass
class CacheInfo:
    path: Path
    built: bool
    seconds: float
    skipped: List[str]  # the refused files, relative to the split folder
    refused: Dict[str, str]  # the same files with the reasons


@dataclass(frozen=True)
class CacheFiles:
    """One prepared cache's files in `folder`: <key>.npy (uint8 N x size x size x 3, memory-mapped),
    <key>.labels.npy (int16 N) and <key>.json (what it holds, and a digest of both, written last)."""
    folder: Path
    stem: str  # dataset-split-<size>px[-interpolation][-n<subset>]: caches of one stem replace each other
    key: str   # stem-v<version>-<source fingerprint>

    @property
    def meta(self) -> Path:
        return self.folder / f"{self.key}.json"

    @property
    def images(self) -> Path:
        return self.folder / f"{self.key}.npy"

    @property
    def labels(self) -> Path:
        return self.folder / f"{self.key}.labels.npy"

    def tmp(self, suffix: str) -> Path:
        return self.folder / f".{self.key}.{os.getpid()}{suffix}"

    def rm(self) -> str:
        return "rm " + " ".join(shlex.quote(str(p)) for p in (self.images, self.labels, self.meta))


SAMPLE_BLOCKS, SAMPLE_BYTES = 16, 1 << 16  # the digest reads 16 blocks of 64 KiB spread over a file
_NPY_HEADER = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _sampled_digest(path: Path, nbytes: int) -> str:
    """sha256 of SAMPLE_BLOCKS blocks spread evenly over the file (all of a file up to 1 MiB): a
    cheap check that catches a zero-filled or swapped file of the right size, not every bit flip."""
    h = hashlib.sha256()
    k = min(SAMPLE_BLOCKS, max(1, -(-nbytes // SAMPLE_BYTES)))
    with open(path, "rb") as f:
        for offset in np.linspace(0, max(0, nbytes - SAMPLE_BYTES), k).astype(np.int64):
            f.seek(int(offset))
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _digest_record(path: Path) -> Dict[str, Any]:
    nbytes = path.stat().st_size
    return {"bytes": nbytes, "sampled_sha256": _sampled_digest(path, nbytes)}


def _check_npy(path: Path, shape: Tuple[int, ...], dtype: Any, record: Optional[Dict[str, Any]]) -> Optional[str]:
    """Why the .npy file does not hold `shape` x `dtype` as recorded (None: it does)."""
    try:
        nbytes = path.stat().st_size
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in _NPY_HEADER:
                return f"its .npy format version {version} is not one numpy writes here"
            got_shape, fortran, got_dtype = _NPY_HEADER[version](f)
            offset = f.tell()
    except FileNotFoundError:
        return "it is missing"
    except (OSError, ValueError, SyntaxError) as e:
        return f"its .npy header is unreadable ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})"
    if tuple(got_shape) != tuple(shape) or got_dtype != np.dtype(dtype) or fortran:
        return f"it holds {got_dtype} {tuple(got_shape)}, the cache's metadata says {np.dtype(dtype)} {tuple(shape)}"
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes != expected:
        return f"it has {nbytes:,} bytes, its header and the cache's metadata say {expected:,}"
    if record and (record.get("bytes") != nbytes or record.get("sampled_sha256") != _sampled_digest(path, nbytes)):
        return "its content differs from the digest recorded when the cache was built"
    return None


def check_cache(files: CacheFiles) -> Optional[Tuple[Path, str]]:
    """(damaged file, why) when the cache is absent or cannot be used as it is, else None. Cheap:
    the .npy headers and sizes against the metadata, and the sampled digests recorded beside them."""
    try:
        meta = json.loads(files.meta.read_text())
        count, size = int(meta["count"]), int(meta["size"])
    except FileNotFoundError:
        return files.meta, "it is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return files.meta, f"it is unreadable ({type(e).__name__})"
    digests = meta.get("integrity") or {}
    for path, shape, dtype in ((files.images, (count, size, size, 3), np.uint8), (files.labels, (count,), np.int16)):
        reason = _check_npy(path, shape, dtype, digests.get(path.name))
        if reason:
            return path, reason
    return None


@contextmanager
def _cache_lock(files: CacheFiles) -> Iterator[bool]:
    """An exclusive flock on .<stem>.lock in the cache folder while a cache is built: several ranks
    or side-by-side runs wait for the one that builds it, then find it built. Yields whether the
    lock is held (False on a file system without flock: each process then builds its own temp
    files and renames them into place, as before)."""
    fd = os.open(files.folder / f".{files.stem}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        held = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building the prepared cache %s ...", files.images)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            held = False
        yield held
    finally:
        os.close(fd)  # releases the flock


def _decode_into(images: np.ndarray, samples: List[Tuple[str, int]], split_dir: Path, size: int,
                 interpolation: str, workers: int) -> Tuple[np.ndarray, Dict[str, str]]:
    """Decode + resize every sample into `images` (usable ones first); (their labels, {refused file
    relative to split_dir: reason}), in the samples' order."""
    labels = np.empty(len(samples), dtype=np.int16)
    refused: Dict[str, str] = {}
    n = 0
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    pool = ctx.Pool(max(1, workers), initializer=_pool_worker_init)
    try:
        for (path, y), img in zip(samples, pool.imap(_decode_resized, [(p, size, interpolation) for p, _ in samples], chunksize=64)):
            if isinstance(img, str):
                refused[os.path.relpath(path, split_dir)] = img
                continue
            images[n], labels[n] = img, y
            n += 1
        pool.close()  # workers exit on their own: no SIGTERM needed
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return labels[:n], refused


def _reserve(path: Path) -> None:
    """Allocate the whole file now, so a full disk fails here with ENOSPC and not later as a
    SIGBUS when a page of the memory map is written (file systems without fallocate: no-op)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if space_error(e):
            raise
    finally:
        os.close(fd)


def _write_temp_cache(files: CacheFiles, samples: List[Tuple[str, int]], split_dir: Path, size: int,
                      interpolation: str, workers: int) -> Dict[str, str]:
    """The images and labels in this process's temp files (files.tmp); returns the refused files."""
    tmp_img = files.tmp(".npy")
    arr = np.lib.format.open_memmap(tmp_img, mode="w+", dtype=np.uint8, shape=(len(samples), size, size, 3))
    try:
        _reserve(tmp_img)
        injected_write_fault(files.images)
        labels, refused = _decode_into(arr, samples, split_dir, size, interpolation, workers)
        arr.flush()
    finally:
        del arr  # unmapped: a removed temp file frees its space at once
    if len(labels) < len(samples):  # shrink to the readable images
        full = np.load(tmp_img, mmap_mode="r")
        try:
            np.save(files.tmp(".shrunk.npy"), full[:len(labels)])
        finally:
            del full
        os.replace(files.tmp(".shrunk.npy"), tmp_img)
    np.save(files.tmp(".labels.npy"), labels)
    return refused


def _publish(files: CacheFiles, meta: Dict[str, Any]) -> None:
    """Rename the temp files into place and write the metadata (with their digests) last: a cache
    is used only when its metadata is there, and that is written only once the rest is complete."""
    tmp_img, tmp_lab = files.tmp(".npy"), files.tmp(".labels.npy")
    meta["integrity"] = {files.images.name: _digest_record(tmp_img), files.labels.name: _digest_record(tmp_lab)}
    files.meta.unlink(missing_ok=True)  # a damaged cache's metadata never describes the new files half-renamed
    for old in files.folder.glob(f"{glob.escape(files.stem)}-v*.json"):  # an older cache of another source or version
        for f in (old, old.with_suffix(".npy"), old.with_suffix(".labels.npy")):
            f.unlink(missing_ok=True)
    os.replace(tmp_img, files.images)
    os.replace(tmp_lab, files.labels)
    try:
        atomic_write_text(files.meta, json.dumps(meta, indent=1))
    except BaseException:  # without its metadata the cache is never used: do not leave its data behind either
        files.images.unlink(missing_ok=True)
        files.labels.unlink(missing_ok=True)
        raise


def _build_cache(files: CacheFiles, meta: Dict[str, Any], samples: List[Tuple[str, int]], split_dir: Path,
                 size: int, interpolation: str, workers: int, damage: Optional[Tuple[Path, str]]) -> None:
    """Build the cache (or replace a damaged one: `damage` says which file and why) from the images."""
    before = _read_meta(files.meta) if damage else None
    if damage:
        log.warning("prepared cache file %s is damaged (%s); rebuilding the cache from %s", damage[0], damage[1],
                    split_dir)
    else:
        log.info("building the prepared cache %s (%d images) ...", files.key, len(samples))
    try:
        refused = _write_temp_cache(files, samples, split_dir, size, interpolation, workers)
        refused_before = set(refused if before is None else before.get("skipped", refused))
        lost = [f for f in refused if f not in refused_before]
        if damage and lost:  # fewer images than before would silently change the data set
            raise DataError(f"prepared cache {damage[0]} is damaged ({damage[1]}) and cannot be rebuilt: {len(lost)} "
                            f"of its images are unreadable now (e.g. {printable(str(split_dir / lost[0]))}: "
                            f"{refused[lost[0]]}); restore them, or remove the cache to build one from the readable "
                            f"images: {files.rm()}")
        _publish(files, {**meta, "count": len(samples) - len(refused), "skipped": list(refused), "refused": refused})
    finally:  # an incomplete cache leaves nothing behind (renamed temp files are gone already)
        for t in (files.tmp(".npy"), files.tmp(".labels.npy"), files.tmp(".shrunk.npy")):
            t.unlink(missing_ok=True)


def _read_meta(path: Path) -> Optional[Dict[str, Any]]:
    try:
        meta = json.loads(path.read_text())
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def _remove_stale_temp_files(files: CacheFiles) -> None:
    """Temp files of this cache left by a build that was killed: with the lock held, nobody else
    is writing any (on this host, or on any host of a file system whose flock is shared)."""
    for p in files.folder.iterdir():
        if p.name.startswith(f".{files.key}."):
            p.unlink(missing_ok=True)


CACHE_FULL_HINT = ("nothing of it was left in the cache folder; free space there, or set data.cache_dir (or "
                   "$ROADMAP_CACHE) to a folder with room, and rerun")


def prepare_cache(name: str, split: str, split_dir: Path, size: int, cache_dir: Path,
                  max_samples: Optional[int] = None, workers: int = 2, interpolation: str = "bicubic",
                  listing: Optional[Tuple[List[str], List[Tuple[str, int]]]] = None) -> Tuple[ArrayImages, CacheInfo]:
    """Load the cache for (dataset, split, size, interpolation, subset, source fingerprint); build it if absent.

    Files: see CacheFiles. A cache whose source changed has another key; older caches of the same
    dataset/split/size are removed when a new one is built. `listing` (classes, samples) replaces
    the ImageFolder scan. Before it is memory-mapped a cache is checked (check_cache); a damaged
    one is rebuilt, with a warning naming the file. One process builds while the others wait
    (_cache_lock). A full disk raises files.DiskFull and leaves no part of the cache behind. The
    refused files are in its metadata; a class or the split left without a usable file is a DataError.
    """
    t0 = time.perf_counter()
    classes, samples = listing or scan_folder(split_dir)
    samples = [samples[i] for i in balanced_subset([y for _, y in samples], max_samples)]
    fp = fingerprint(samples, split_dir)
    stem = (f"{name}-{split}-{size}px" + (f"-{interpolation}" if interpolation != "bicubic" else "")
            + (f"-n{len(samples)}" if max_samples else ""))
    files = CacheFiles(cache_dir, stem, f"{stem}-v{CACHE_VERSION}-{fp}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    built = False
    if check_cache(files) is not None:
        needed = len(samples) * (size * size * 3 + 2) + 256
        with reporting_full_disk(files.images, needed, CACHE_FULL_HINT), _cache_lock(files) as held:
            damage = check_cache(files)  # built by another process while this one waited?
            if damage is not None:
                if held:
                    _remove_stale_temp_files(files)
                meta = {"dataset": name, "split": split, "size": size, "classes": classes, "source": str(split_dir),
                        "fingerprint": fp, "version": CACHE_VERSION}
                _build_cache(files, meta, samples, split_dir, size, interpolation, workers,
                             damage if files.meta.exists() else None)
                built = True
    meta = json.loads(files.meta.read_text())
    images = np.load(files.images, mmap_mode="r")
    labels = np.load(files.labels)
    refused = meta.get("refused") or {f: "refused when the cache was built" for f in meta["skipped"]}  # older caches
    relative = {p: os.path.relpath(p, split_dir) for p, _ in samples}
    by_sample = {p: refused[r] for p, r in relative.items() if r in refused}
    error = emptied_error(split_dir, meta["classes"], samples, labels, by_sample, f"the cache's metadata {files.meta}")
    if error is not None:
        raise error
    ds = ArrayImages(images, labels, meta["classes"], refused)
    return ds, CacheInfo(files.images, built, time.perf_counter() - t0, list(refused), refused)


def default_cache_dir(data: Any) -> Path:
    if data.cache_dir:
        return Path(os.path.expanduser(str(data.cache_dir)))
    if os.environ.get("ROADMAP_CACHE"):
        return Path(os.environ["ROADMAP_CACHE"])
    return Path.home() / ".cache" / "roadmap"


# ---------------------------------------------------------------------------------------------
# Augmentation (timm) with per-sample seeding (the epoch-aware sampler: roadmap.loading)
# ---------------------------------------------------------------------------------------------
def build_transforms(recipe: Any, img_size: int, eval_size: int) -> Tuple[Callable, Callable]:
    from timm.data import create_transform

    train = create_transform(
        img_size, is_training=True, auto_augment=recipe.auto_augment or None,
        interpolation=recipe.train_interpolation, re_prob=recipe.reprob, re_mode="pixel", re_count=1,
        hflip=0.5, color_jitter=None)
    val = create_transform(eval_size, is_training=False, interpolation=recipe.eval_interpolation,
                           crop_pct=recipe.crop_pct)
    return train, val


class Augmented(Dataset):
    """Applies `transform` to a base dataset; index (i, epoch) seeds the sample's randomness."""

    def __init__(self, base: Any, transform: Callable, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Any) -> Tuple[torch.Tensor, int]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        s = (self.seed * 1_000_003 + epoch * 10_007 + i) % (2 ** 63)
        in_main = torch.utils.data.get_worker_info() is None
        if in_main:  # leave the training process's own random streams untouched
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(s)  # timm: RandomResizedCrop, flip, RandAugment magnitudes, RandomErasing
        np.random.seed(s % 2 ** 32)  # timm: RandAugment's choice of ops
        torch.default_generator.manual_seed(s)  # CPU only: torch.manual_seed also queues lazy CUDA/XPU/MTIA seeding, ~1 ms each time
        img, y = self.base[i]
        out = self.transform(img), y
        if in_main:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
        return out


# ---------------------------------------------------------------------------------------------
# Everything the train loop needs
# ---------------------------------------------------------------------------------------------
def base_datasets(cfg: Any, log_fn: Callable[[str], None] = log.info,
                  refused_list: Optional[Path] = None) -> Tuple[Any, Any, Dict[str, Any]]:
    """The (train, val) base datasets and what they are. Folder data: one summary line per split
    through `log_fn`; refused files are listed in `refused_list` (the run directory's, when given)."""
    data = cfg.data
    info: Dict[str, Any] = {"dataset": data.name}
    root = resolve_root(data)
    if data.name == "synthetic":
        size = cache_size_for(cfg.scale.img_size, cfg.recipe.crop_pct)
        n_val = max(data.synthetic_size // 4, 8)
        return (RandomImages(data.synthetic_size, size, data.num_classes, seed=1),
                RandomImages(n_val, size, data.num_classes, seed=2), {**info, "root": None, "cache": False})
    info["root"] = str(root)
    if data.name in ("cifar10", "cifar100"):
        from torchvision import datasets as tvd

        cls = tvd.CIFAR10 if data.name == "cifar10" else tvd.CIFAR100
        try:  # torchvision checks the files' MD5 and downloads only what is missing
            train = cls(str(root), train=True, download=True)
            val = cls(str(root), train=False, download=True)
        except Exception as e:
            raise DataError(f"data.root={str(root)!r}: {data.name} not found and not downloadable ({type(e).__name__}); "
                            f"put the torchvision {data.name} files there") from None
        for ds in (train, val):
            ds.skipped_files = 0
        return train, val, {**info, "cache": False}
    if data.name == "imagenette":
        ensure_imagenette(root)
    elif not root.is_dir():
        raise DataError(f"data.root={str(root)!r} does not exist; point data.root (or $ROADMAP_DATA) at a folder with {data.train_split}/ and {data.val_split}/")
    if refused_list is not None:
        info["refused_list"] = str(refused_list)
    out, refused = [], {}
    for role, split, n in (("train", data.train_split, cfg.scale.max_train_samples),
                           ("val", data.val_split, cfg.scale.max_val_samples)):
        ds, refused[role], line = _folder_split(cfg, role, split, n, root, info, refused_list)
        log_fn(line)
        out.append(ds)
    if data.cache and refused_list is not None:  # the list is the caches' refusals, nothing else
        if any(refused.values()):
            write_refused(refused_list, refused)
        else:
            refused_list.unlink(missing_ok=True)
    train, val = out
    if train.classes != val.classes:
        raise DataError(f"class folders differ between {data.train_split}/ ({len(train.classes)}) and {data.val_split}/ ({len(val.classes)})")
    return train, val, {**info, "cache": bool(data.cache)}


def _folder_split(cfg: Any, role: str, split: str, n: Optional[int], root: Path, info: Dict[str, Any],
                  refused_list: Optional[Path]) -> Tuple[Any, Dict[str, str], str]:
    """One split of folder data: (dataset, {refused file: reason} known now, its summary line)."""
    data, scale, recipe = cfg.data, cfg.scale, cfg.recipe
    listing = scan_imagenet(data, root, split) if data.name == "imagenet" else None
    split_dir = (imagenet_image_root(root) if data.name == "imagenet" else root) / split
    listed = f", listed in {refused_list}" if refused_list is not None else ""
    if data.cache:
        size = cache_size_for(max(scale.img_size, scale.eval_img_size or 0), recipe.crop_pct)
        # eval images are a centre crop of the cached ones: resized with the recipe's eval interpolation
        interp = recipe.eval_interpolation if split == data.val_split else "bicubic"
        ds, ci = prepare_cache(data.name, split, split_dir, size, default_cache_dir(data), n,
                               workers=max(1, scale.workers), interpolation=interp, listing=listing)
        info[f"cache_{split}"] = {"path": str(ci.path), "built": ci.built, "seconds": round(ci.seconds, 2),
                                  "images": len(ds), "size": size, "refused": len(ci.refused)}
        refused = {os.path.join(split_dir, f): r for f, r in ci.refused.items()}
        how = f"the prepared cache {ci.path.name} ({f'built in {ci.seconds:.1f} s' if ci.built else 'reused'})"
        what = (f"{len(refused)} refused and skipped{listed}: {naming(refused, str(split_dir))}" if refused
                else "none refused")
    else:
        classes, samples = listing or scan_folder(split_dir)
        samples = [samples[i] for i in balanced_subset([y for _, y in samples], n)]
        ds = FolderImages(samples, classes, role, split_dir, refused_list)
        before = read_refused(refused_list).get(role, {}) if refused_list is not None and refused_list.exists() else {}
        refused = {}
        how = f"{printable(str(split_dir))}, decoded as they are read (data.cache=false)"
        what = (f"a refused file is skipped when first met and named in a log line{listed}"
                + (f"; {len(before)} refused in an earlier attempt of this run" if before else ""))
    return ds, refused, f"{role} data: {len(ds):,} images of {len(ds.classes)} classes from {how}; {what}"


def discover_num_classes(cfg: Any) -> None:
    """`data=imagefolder`: the class count is the number of class folders under train/."""
    if cfg.data.name == "imagefolder":
        root = resolve_root(cfg.data)
        classes, _ = scan_folder(root / cfg.data.train_split)
        cfg.data.num_classes = len(classes)


def build_data(cfg: Any, rank: int = 0, world: int = 1, log_fn: Callable[[str], None] = log.info,
               refused_list: Optional[Path] = None) -> Data:
    """The train loop's data: the base datasets, then the CPU loaders (timm's transforms in worker
    processes) or, with scale.loader=device, the on-device ones (roadmap.device_data). Refused
    image files are listed in `refused_list` (a run's: <run dir>/refused_images.tsv)."""
    train_base, val_base, info = base_datasets(cfg, log_fn, refused_list)
    classes = list(train_base.classes)
    if cfg.data.name not in ("synthetic", "imagefolder") and len(classes) != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has {len(classes)} classes; "
                          f"set data.num_classes={len(classes)}")
    if cfg.scale.loader == "device":  # uint8 images and the augmentations on the training device
        return build_device_data(cfg, train_base, val_base, info, rank, world)
    return cpu_data(cfg, train_base, val_base, info, rank, world)


def cpu_data(cfg: Any, train_base: Any, val_base: Any, info: Dict[str, Any], rank: int = 0, world: int = 1) -> Data:
    """DataLoaders applying timm's transforms (roadmap.data.Augmented) in `scale.workers` processes."""
    classes = list(train_base.classes)
    img, eval_img = cfg.scale.img_size, cfg.scale.eval_img_size or cfg.scale.img_size
    t_train, t_val = build_transforms(cfg.recipe, img, eval_img)
    train_ds = Augmented(train_base, t_train, cfg.seed)
    val_ds = Augmented(val_base, t_val, cfg.seed)
    train_sampler = EpochSampler(len(train_ds), cfg.seed, shuffle=True, rank=rank, world=world)
    val_sampler = EpochSampler(len(val_ds), cfg.seed, shuffle=False, rank=rank, world=world, pad=False)
    workers = cfg.scale.workers
    # Own generator: creating an iterator draws worker seeds from it, not from the global RNG
    # (which drives dropout/mixup and is checkpointed). Samples are seeded per (seed, epoch, index).
    # Workers ignore the stop signals: the main process checkpoints and shuts them down (rundir.py).
    common = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                  generator=torch.Generator().manual_seed(cfg.seed),
                  worker_init_fn=ignore_stop_signals_in_worker if workers > 0 else None)
    if workers > 0:
        common["prefetch_factor"] = 4
        if "fork" in mp.get_all_start_methods():  # explicit: inside a loky worker (hydra/launcher=parallel)
            common["multiprocessing_context"] = mp.get_context("fork")  # the default context is loky's
    train = DataLoader(train_ds, batch_size=cfg.scale.batch_size, sampler=train_sampler, drop_last=True, **common)
    val = DataLoader(val_ds, batch_size=cfg.scale.batch_size * 2, sampler=val_sampler, drop_last=False, **common)
    info.update(train_images=len(train_ds), val_images=len(val_ds), classes=len(classes))
    return Data(train, val, train_sampler, len(classes), classes, info)
