"""Every way an image file can be refused, made for real (issue 32): each is skipped, counted per split,
named in one log line and listed in the run directory's refused_images.tsv; odd modes that can be read
are read; only a class or a split left without a usable image stops a run, with one line naming it."""
import ctypes
import json
import logging
import os
import shutil
import socket
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from roadmap.data import DataError, FolderImages, prepare_cache, scan_folder
from roadmap.images import REFUSED_LIST, Refused, printable, read_refused, read_rgb
from roadmap.steps import compose_config
from roadmap.train import run

CLASSES = ["n01440764", "n02979186"]  # tench, cassette player
LISTED = 24  # train files of the run's dataset: 3 batches of 8
ODD = ["cmyk.jpg", "palette.png", "la.png", "gray16.png", os.fsdecode(b"caf\xe9.JPEG")]  # read, not refused


# ------------------------------------------------------------------ permissions bind root too
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: what lets root read a file of mode 000


@contextmanager
def _without_dac_override() -> Iterator[bool]:
    """Tests run as root, whom chmod 000 does not stop: drop the two capabilities from this thread's
    effective set (Linux capset; processes forked meanwhile, the loader's and the cache builder's,
    inherit that) and give them back after. Yields whether mode 000 now refuses a read."""
    if os.geteuid() != 0:
        yield True
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        head, saved = _CapHeader(0x20080522, 0), (_CapData * 2)()
        if libc.capget(ctypes.byref(head), saved) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        dropped = (_CapData * 2)()
        ctypes.memmove(dropped, saved, ctypes.sizeof(saved))
        dropped[0].effective &= ~_DAC
        if libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), dropped) != 0:
            raise OSError(ctypes.get_errno(), "capset")
    except (OSError, AttributeError):  # not Linux, or capset refused (seccomp)
        yield False
        return
    try:
        yield True
    finally:
        libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), saved)


@pytest.fixture
def permissions_bind() -> Iterator[bool]:
    with _without_dac_override() as binding:
        yield binding


# ------------------------------------------------------------------ the files
def _png_1bit(w: int, h: int) -> bytes:
    """A complete, valid 1-bit PNG of w x h black pixels: a few KiB that would decode to w*h pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\0" * ((1 + (w + 7) // 8) * h), 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def make_refused(d: Path, jpeg: bytes, permissions: bool) -> Dict[str, str]:
    """Files named like images that cannot be used, in `d`: {path: what the reason says}."""
    limit = Image.MAX_IMAGE_PIXELS
    out: Dict[str, str] = {}

    def put(name: str, data: bytes, reason: str) -> Path:
        (d / name).write_bytes(data)
        out[str(d / name)] = reason
        return d / name

    put("garbage.JPEG", b"this is not a JPEG" * 100, "not an image PIL can identify")
    put("empty.JPEG", b"", "empty file (0 bytes)")
    put("truncated.JPEG", jpeg[: len(jpeg) // 2], "image file is truncated")
    put("bomb.png", _png_1bit(20000, 10000), f"exceeds limit of {2 * limit} pixels")  # PIL's error
    put("bomb_warned.png", _png_1bit(10000, 10000), f"exceeds limit of {limit} pixels")  # PIL's warning only
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(d / "float.tif")
    out[str(d / "float.tif")] = "mode F"
    os.mkfifo(d / "fifo.JPEG")  # opened blocking, it would hang the loader
    out[str(d / "fifo.JPEG")] = "not a regular file (a FIFO)"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "socket.JPEG"))
    out[str(d / "socket.JPEG")] = "not a regular file (a socket)"
    (d / "device.JPEG").symlink_to("/dev/zero")
    out[str(d / "device.JPEG")] = "not a regular file (a character device)"
    (d / "dangling.JPEG").symlink_to(d / "nowhere.JPEG")
    out[str(d / "dangling.JPEG")] = "a symbolic link to a missing file (ENOENT)"
    (d / "loop_a.JPEG").symlink_to(d / "loop_b.JPEG")
    (d / "loop_b.JPEG").symlink_to(d / "loop_a.JPEG")
    out.update({str(d / "loop_a.JPEG"): "(ELOOP)", str(d / "loop_b.JPEG"): "(ELOOP)"})
    if Path("/proc/self/mem").exists():  # a file whose read fails: address 0 of the reader is not mapped
        (d / "io_error.JPEG").symlink_to("/proc/self/mem")
        out[str(d / "io_error.JPEG")] = "Input/output error (EIO)"
    put(os.fsdecode(b"not\xffutf8\nnewline.JPEG"), b"\xff\xd8 broken", "not an image PIL can identify")
    if permissions:
        put("no_permission.JPEG", jpeg, "Permission denied (EACCES)").chmod(0)
    (d / "folder.JPEG").mkdir()  # a directory named like an image: not an image file (as ImageFolder)
    return out


def make_odd(d: Path, jpeg: bytes) -> None:
    """Readable images in modes other than RGB (and a name that is not UTF-8)."""
    Image.new("CMYK", (40, 40), (0, 200, 200, 0)).save(d / ODD[0])
    Image.new("P", (40, 40), 3).save(d / ODD[1], transparency=3)
    Image.new("LA", (40, 40), (90, 128)).save(d / ODD[2])
    Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16)).save(d / ODD[3])  # I;16: mid-grey
    (d / ODD[4]).write_bytes(jpeg)


@pytest.fixture
def dataset(imagenette, tmp_path, permissions_bind):
    """<tmp>/data/{train,val}/<2 classes> of real JPEGs; train/<class 0>/ also holds a file refused in every
    way made here, train/<class 1>/ the odd modes, val/<class 1>/ two refused files. 24 train files listed
    (a multiple of the batch: one epoch reads them all), 6 val."""
    root = tmp_path / "data"
    for split, n in (("train", 1), ("val", 2)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for f in sorted((imagenette / split / c).iterdir())[:n]:
                shutil.copy(f, root / split / c / f.name)
    jpeg = next((root / "train" / CLASSES[0]).iterdir()).read_bytes()
    refused = {"train": make_refused(root / "train" / CLASSES[0], jpeg, permissions_bind)}
    make_odd(root / "train" / CLASSES[1], jpeg)
    val = root / "val" / CLASSES[1]
    (val / "garbage.JPEG").write_bytes(b"GIF89a nothing else")
    (val / "truncated.JPEG").write_bytes(jpeg[:300])  # cut inside its header: another message than train's
    refused["val"] = {str(val / "garbage.JPEG"): "not an image PIL can identify",
                      str(val / "truncated.JPEG"): "Truncated File Read"}
    for k in range(len(scan_folder(root / "train")[1]), LISTED):  # pad with real images
        shutil.copy(sorted((imagenette / "train" / CLASSES[1]).iterdir())[1 + k], root / "train" / CLASSES[1])
    assert len(scan_folder(root / "train")[1]) == LISTED, "more kinds than files: raise LISTED"
    return root, refused


# ------------------------------------------------------------------ one file
def test_each_kind_is_refused_with_its_reason_and_odd_modes_are_read(dataset):
    root, refused = dataset
    for path, reason in {**refused["train"], **refused["val"]}.items():
        with pytest.raises(Refused) as e:
            read_rgb(path)
        assert reason in str(e.value) and "\n" not in str(e.value), (path, str(e.value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even PIL's note on palette transparency
        for name in ODD:
            img = read_rgb(str(root / "train" / CLASSES[1] / name))
            assert img.mode == "RGB" and img.size[0] > 0
    grey = np.asarray(read_rgb(str(root / "train" / CLASSES[1] / "gray16.png")))
    assert (grey == 127).all()  # 32768 of 65535 scaled to 8 bits; PIL's own convert clips it to 255
    assert printable(os.fsdecode(b"not\xffutf8\nnewline.JPEG")) == "not\\xffutf8\\nnewline.JPEG"


def test_unreadable_permissions_are_refused(tmp_path, permissions_bind):
    if not permissions_bind:
        pytest.skip("running as root, and this system refuses capset: mode 000 cannot stop this process")
    f = tmp_path / "x.JPEG"
    f.write_bytes(b"whatever")
    f.chmod(0)
    with pytest.raises(Refused, match=r"Permission denied \(EACCES\)"):
        read_rgb(str(f))
    cls = _tiny_folder(tmp_path / "train") / "b"
    cls.chmod(0)  # a class folder that cannot be listed: the class is left empty
    with pytest.raises(DataError) as e:
        scan_folder(tmp_path / "train")
    assert str(e.value) == f"folder {cls} cannot be listed: Permission denied (EACCES)"


# ------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("cache", ["true", "false"])
def test_a_dataset_with_files_refused_in_every_way_trains_names_each_and_counts_them(dataset, tmp_path, cache, caplog):
    """The prepared cache knows them all at once (one summary line per split names them); the folder
    loader meets each when it first reads it (one line each). Both list them all, count them per split."""
    root, refused = dataset
    caplog.set_level(logging.INFO)
    cfg = compose_config(["scale=smoke", "logger=none", "scale.workers=0", "data=imagefolder", f"data.root={root}",
                          f"data.cache={cache}", f"data.cache_dir={tmp_path / 'cache'}", "scale.max_train_samples=null",
                          "scale.max_val_samples=null", "scale.batch_size=8", "scale.epochs=1", "scale.img_size=32",
                          "step=patchify_stem"])
    run_dir = tmp_path / f"run-{cache}"
    with warnings.catch_warnings(record=True) as caught:  # under the filters a run has
        metrics = run(cfg, run_dir)
    names = [Path(p).name for files in refused.values() for p in files]
    ours = [f"{w.filename}: {w.message}" for w in caught if "PIL" in w.filename or any(n in str(w.message) for n in names)]
    assert not ours, ours  # named through the log, never a Python warning
    counts = {split: len(files) for split, files in refused.items()}
    assert metrics["skipped_by_split"] == counts and metrics["skipped_files"] == sum(counts.values())
    assert metrics["train_images"] == (LISTED - counts["train"] if cache == "true" else LISTED)
    listed = read_refused(run_dir / REFUSED_LIST)  # every file, with its reason, each once
    for split, files in refused.items():
        assert set(listed[split]) == {printable(p) for p in files}
        for path, reason in files.items():
            assert reason in listed[split][printable(path)]
    log_lines = (run_dir / "train.log").read_text().splitlines()
    for path in [*refused["train"], *refused["val"]]:
        name = printable(path if cache == "false" else os.path.relpath(path, Path(path).parent.parent))
        assert len([line for line in log_lines if name in line]) == 1, name  # named in one line
    if cache == "true":
        kept = LISTED - counts["train"]
        summary = next(line for line in log_lines if f"train data: {kept} images of 2 classes from the prepared" in line)
        assert f"{counts['train']} refused and skipped, listed in {run_dir / REFUSED_LIST}" in summary
    else:
        assert any(f"train data: {LISTED} images of 2 classes from" in line and "decoded as they are read" in line
                   and str(run_dir / REFUSED_LIST) in line for line in log_lines)
    assert json.loads((run_dir / "metrics.json").read_text())["skipped_by_split"] == counts


# ------------------------------------------------------------------ a class or a split left empty
def _tiny_folder(root: Path, per_class: int = 2) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (16, 16), (40 * k, 90, 200)).save(root / c / f"{k}.jpg")
    return root


def test_a_class_left_empty_is_one_line_naming_it_in_both_paths(tmp_path):
    split = _tiny_folder(tmp_path / "src" / "train")
    for f in (split / "b").iterdir():
        f.write_bytes(b"")
    with pytest.raises(DataError) as e:
        prepare_cache("tiny", "train", split, 16, tmp_path / "cache", workers=1)
    msg = str(e.value)
    assert "\n" not in msg and f"every image of class 'b' in {split} was refused (2 files, e.g. b/0.jpg: empty" in msg
    classes, samples = scan_folder(split)
    loader = DataLoader(FolderImages(samples, classes, "train", split), batch_size=None, num_workers=1,
                        collate_fn=lambda x: x, multiprocessing_context="fork")
    with pytest.raises(DataError) as e:  # raised in a loader process: still the one line
        list(loader)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"every image of class 'b' in {split} was refused")


def test_a_split_left_empty_is_one_line_naming_it(tmp_path):
    split = _tiny_folder(tmp_path / "src" / "val", per_class=1)
    for f in split.glob("*/*.jpg"):
        f.write_bytes(b"no")
    with pytest.raises(DataError) as e:
        prepare_cache("tiny", "val", split, 16, tmp_path / "cache", workers=1)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"every image of {split} was refused (2 files")


def test_the_folder_loader_names_each_refused_file_once_across_processes_and_epochs(tmp_path):
    split = _tiny_folder(tmp_path / "src" / "train", per_class=3)
    (split / "a" / "1.jpg").write_bytes(b"")
    (split / "b" / "2.jpg").write_bytes(b"\xff\xd8 cut")
    classes, samples = scan_folder(split)
    listing = tmp_path / REFUSED_LIST
    ds = FolderImages(samples, classes, "train", split, listing)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, collate_fn=lambda x: x,
                        multiprocessing_context="fork")
    for _ in range(2):  # two epochs, each file read by either worker
        assert len(list(loader)) == 6
    assert ds.skipped_files == 2  # the workers' flags, seen here
    lines = listing.read_text().splitlines()
    assert lines[0] == "split\tfile\treason" and len(lines) == 3  # each file once
    assert read_refused(listing) == {"train": {str(split / "a" / "1.jpg"): "empty file (0 bytes)",
                                               str(split / "b" / "2.jpg"): "not an image PIL can identify"}}
