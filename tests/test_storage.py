"""Storage faults (issue 23), with real files: a prepared cache cut short, swapped or zero-filled is
rebuilt (once, by one of several processes that find it damaged at once) and training on it equals
training on a fresh one; a full disk, on a real small tmpfs where this machine lets us mount one
(we run as root) and through $ROADMAP_FAULT=enospc:... everywhere, is one line naming the file and
the sizes, leaves the previous checkpoint (or result file) intact and no partial cache behind, and
a rerun after space is freed finishes equal to an uninterrupted run.
"""
import csv
import errno
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import roadmap.faults as faults_mod
from roadmap.data import DataError, prepare_cache
from roadmap.files import DiskFull, atomic_write_bytes, reporting_full_disk, write_json
from roadmap.rundir import load_checkpoint, save_checkpoint
from roadmap.steps import compose_config
from roadmap.train import run

CLASSES = ["n01440764", "n02979186", "n03888257"]
PER_CLASS, SIZE = 10, 40
# The smallest real run: 40 train images in 5 steps of 8, 20 val images, 2 epochs, quarter width, 64 px.
TINY = ["step=baseline", "scale=smoke", "scale.max_train_samples=40", "scale.max_val_samples=20", "scale.batch_size=8",
        "scale.workers=0", "scale.threads=1", "logger=none"]  # one thread: the CLI run and in-process runs agree
TIMING = {"train_img_s", "train_seconds", "eval_img_s"}
MIB = re.compile(r"it needs about ([\d.]+) MiB, ([\d.]+) MiB free in ")


@pytest.fixture(autouse=True)
def _no_injected_faults(monkeypatch):
    monkeypatch.delenv("ROADMAP_FAULT", raising=False)
    monkeypatch.setattr(faults_mod, "_WRITES", {})


# ------------------------------------------------------------------ a real small file system
class SmallFS:
    """A tmpfs of `size` bytes mounted at `path`; `resize` is `mount -o remount,size=...`."""

    def __init__(self, path: Path):
        self.path = path

    def mount(self, size: int) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                              capture_output=True).returncode == 0

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True)

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    fs = SmallFS(tmp_path / "small")
    made = []

    def mount(size: int) -> SmallFS:
        if shutil.which("mount") is None or not fs.mount(size):
            pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); the ROADMAP_FAULT variant covers it")
        made.append(fs)
        return fs

    yield mount
    for f in made:
        f.umount()


def one_disk_full_line(message: str, path: Path):
    """The message is one line naming the file and the sizes; returns (needed, free) in MiB."""
    assert "\n" not in message and "no space left on device" in message and f"writing {path}:" in message, message
    m = MIB.search(message)
    assert m, message
    return float(m.group(1)), float(m.group(2))


# ------------------------------------------------------------------ the prepared cache
@pytest.fixture
def folder(tmp_path, imagenette) -> Path:
    """<tmp>/src/train/<3 classes>/<10 real JPEGs each>."""
    for c in CLASSES:
        dst = tmp_path / "src" / "train" / c
        dst.mkdir(parents=True)
        for f in sorted((imagenette / "train" / c).iterdir())[:PER_CLASS]:
            shutil.copy2(f, dst / f.name)
    return tmp_path / "src"


def build(folder: Path, cache: Path, size: int = SIZE):
    return prepare_cache("tiny", "train", folder / "train", size, cache, workers=1)


def leftovers(cache: Path):
    """Anything in the cache folder but its lock files."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def damage_cache(kind: str, images: Path, folder: Path, tmp_path: Path) -> Path:
    """Damage one file of a built cache as storage does; returns the file the warning must name."""
    labels, meta = images.with_name(images.name.replace(".npy", ".labels.npy")), images.with_suffix(".json")
    if kind == "truncated":  # a copy cut short by a quota or a killed rsync
        os.truncate(images, images.stat().st_size // 2)
    elif kind == "other_shape":  # another cache's file under this name (another size)
        other, _ = build(folder, tmp_path / "other", size=SIZE + 8)
        shutil.copyfile(other.images.filename, images)
    elif kind == "zero_filled":  # right size, content gone (a preallocated copy that never finished)
        with open(images, "r+b") as f:
            f.seek(images.stat().st_size // 2)
            f.write(b"\0" * (images.stat().st_size // 2))
    elif kind == "labels_truncated":
        os.truncate(labels, 100)
        return labels
    elif kind == "meta_garbled":
        meta.write_text(meta.read_text()[:40])
        return meta
    return images


@pytest.mark.parametrize("kind", ["truncated", "other_shape", "zero_filled", "labels_truncated", "meta_garbled"])
def test_damaged_cache_is_rebuilt_with_one_warning_naming_the_file(kind, folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    fresh, info = build(folder, cache)
    images, labels = np.array(fresh.images), fresh.labels.copy()
    files = leftovers(cache)
    del fresh
    bad = damage_cache(kind, info.path, folder, tmp_path)
    with caplog.at_level(logging.WARNING, logger="roadmap.data"):
        again, info2 = build(folder, cache)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and f"prepared cache file {bad} is damaged" in warned[0], warned
    assert info2.built and info2.path == info.path and leftovers(cache) == files  # no temp file left behind
    np.testing.assert_array_equal(np.asarray(again.images), images)
    np.testing.assert_array_equal(again.labels, labels)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="roadmap.data"):
        _, info3 = build(folder, cache)
    assert not info3.built and not caplog.records  # the rebuilt cache passes the check


def _build_in_child(folder, cache, barrier, results):
    barrier.wait()  # both processes look at the damaged cache at the same moment
    _, info = build(folder, cache)
    results.put(info.built)


def test_cache_found_damaged_by_two_processes_at_once_is_rebuilt_once(folder, tmp_path):
    cache = tmp_path / "cache"
    fresh, info = build(folder, cache)
    images = np.array(fresh.images)
    os.truncate(info.path, 1000)
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(folder, cache, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(results.get(timeout=5) for _ in procs) == [False, True]  # one built it, the other waited
    again, _ = build(folder, cache)
    np.testing.assert_array_equal(np.asarray(again.images), images)
    assert len(leftovers(cache)) == 3


def test_damaged_cache_whose_images_are_unreadable_now_is_one_line_naming_the_rm(folder, tmp_path):
    cache = tmp_path / "cache"
    _, info = build(folder, cache)
    os.truncate(info.path, 5000)
    gone = sorted((folder / "train" / CLASSES[1]).iterdir())[:2]
    for f in gone:  # same size and mtime (the same source fingerprint), but nothing left to decode
        st = f.stat()
        f.write_bytes(b"\0" * st.st_size)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError) as e:
        build(folder, cache)
    msg = str(e.value)
    assert "\n" not in msg and f"prepared cache {info.path} is damaged" in msg and "cannot be rebuilt" in msg, msg
    assert "2 of its images are unreadable now" in msg
    rm = msg[msg.index("rm "):]
    subprocess.run(rm, shell=True, check=True)  # the fix the message gives
    assert leftovers(cache) == []
    ds, info2 = build(folder, cache)
    assert info2.built and len(ds) == 3 * PER_CLASS - 2


def check_cache_disk_full(e: DiskFull, folder: Path, cache: Path, tmp_path: Path) -> None:
    needed, _ = one_disk_full_line(str(e), e.filename and Path(e.filename))
    assert Path(e.filename).parent == cache and Path(e.filename).suffix == ".npy"
    assert needed == pytest.approx(3 * PER_CLASS * SIZE * SIZE * 3 / 2 ** 20, rel=0.05)
    assert "data.cache_dir" in str(e)
    assert leftovers(cache) == []  # nothing a later run could take for a cache, no temp file


def test_full_disk_while_building_the_cache_leaves_nothing_then_builds(folder, tmp_path, small_fs):
    fs = small_fs(64 * 1024)  # the cache needs 141 KiB
    cache = fs.path / "cache"
    with pytest.raises(DiskFull) as e:
        build(folder, cache)
    check_cache_disk_full(e.value, folder, cache, tmp_path)
    assert float(MIB.search(str(e.value)).group(2)) < 0.07
    fs.resize(1024 * 1024)
    ds, info = build(folder, cache)
    ref, _ = build(folder, tmp_path / "ref")
    assert info.built and np.array_equal(np.asarray(ds.images), np.asarray(ref.images))


def test_injected_full_disk_while_building_the_cache_leaves_nothing(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROADMAP_FAULT", "enospc:tiny-train-*.npy")
    with pytest.raises(DiskFull) as e:
        build(folder, cache)
    check_cache_disk_full(e.value, folder, cache, tmp_path)
    monkeypatch.delenv("ROADMAP_FAULT")
    _, info = build(folder, cache)
    assert info.built and len(leftovers(cache)) == 3


# ------------------------------------------------------------------ result files and checkpoints, unit by unit
@pytest.mark.parametrize("where", ["tmpfs", "injected"])
def test_full_disk_writing_a_result_file_keeps_the_old_one(where, tmp_path, small_fs, monkeypatch):
    if where == "tmpfs":
        folder = small_fs(64 * 1024).path
        big = b"x" * (100 * 1024)
    else:
        folder, big = tmp_path, b"x" * (100 * 1024)
        monkeypatch.setenv("ROADMAP_FAULT", "enospc:metrics.json@2")
    write_json(folder / "metrics.json", {"top1": 1.0})
    with pytest.raises(DiskFull) as e:
        atomic_write_bytes(folder / "metrics.json", big)
    needed, free = one_disk_full_line(str(e.value), folder / "metrics.json")
    assert needed == pytest.approx(0.098, abs=0.001) and e.value.errno == errno.ENOSPC
    if where == "tmpfs":
        assert free < needed
    assert json.loads((folder / "metrics.json").read_text()) == {"top1": 1.0}
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("where", ["tmpfs", "injected"])
def test_full_disk_at_a_checkpoint_keeps_the_previous_one(where, tmp_path, small_fs, monkeypatch):
    if where == "tmpfs":
        folder = small_fs(1024 * 1024).path  # 0.4 MB checkpoints: one fits, two do not
    else:
        folder = tmp_path
        monkeypatch.setenv("ROADMAP_FAULT", "enospc:last.pt@2")
    state = {"model": {"w": torch.zeros(100_000)}, "epoch": 1}
    save_checkpoint(folder, state)
    with pytest.raises(DiskFull) as e:
        save_checkpoint(folder, {**state, "epoch": 2, "more": torch.zeros(100_000)})
    needed, free = one_disk_full_line(str(e.value), folder / "last.pt")
    assert needed == pytest.approx(0.76, abs=0.02) and (free < needed or where == "injected")
    assert f"the previous checkpoint {folder / 'last.pt'} is intact" in str(e.value)
    ck, path = load_checkpoint(folder)
    assert path.name == "last.pt" and ck["epoch"] == 1 and sorted(p.name for p in folder.iterdir()) == ["last.pt"]


def test_quota_exceeded_inside_another_error_is_named_and_other_errors_pass(tmp_path):
    """torch's writer reports a full disk as a RuntimeError raised while handling the OSError."""
    with pytest.raises(DiskFull) as e, reporting_full_disk(tmp_path / "last.pt", 3 * 2 ** 20):
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert e.value.errno == errno.EDQUOT and str(e.value).startswith(f"disk quota exceeded writing {tmp_path / 'last.pt'}: "
                                                                      "it needs about 3.0 MiB, ")
    with pytest.raises(RuntimeError, match="unrelated"), reporting_full_disk(tmp_path / "last.pt", 1):
        raise RuntimeError("unrelated")


# ------------------------------------------------------------------ real runs
def results(run_dir: Path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(run_dir / "history.csv"))]
    return {k: metrics[k] for k in ("top1", "top5", "val_loss", "train_loss", "epochs_done", "top1_best")}, rows


@pytest.fixture(scope="module")
def work(tmp_path_factory, imagenette):
    """An uninterrupted run on a fresh cache: what every run below must reproduce."""
    d = tmp_path_factory.mktemp("storage")
    args = [*TINY, f"data.cache_dir={d / 'cache'}"]
    run(compose_config(args), d / "ref")
    return d, args, results(d / "ref"), (d / "ref" / "last.pt").stat().st_size


@pytest.mark.parametrize("kind", ["truncated", "other_shape"])
def test_run_on_a_damaged_cache_rebuilds_it_and_equals_a_run_on_a_fresh_one(kind, work, tmp_path, caplog):
    d, args, reference, _ = work
    (train_cache,) = (d / "cache").glob("imagenette-train-*-v*[0-9a-f].npy")
    (val_cache,) = (d / "cache").glob("imagenette-val-*-v*[0-9a-f].npy")
    if kind == "truncated":
        os.truncate(train_cache, train_cache.stat().st_size // 3)
    else:  # the val cache's file in the train cache's place: another shape
        shutil.copyfile(val_cache, train_cache)
    with caplog.at_level(logging.WARNING, logger="roadmap.data"):
        run(compose_config(args), tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "roadmap.data"]
    assert len(warned) == 1 and f"prepared cache file {train_cache} is damaged" in warned[0], warned
    assert results(tmp_path / "run") == reference


def test_full_disk_at_a_checkpoint_is_one_line_then_the_rerun_resumes(work, tmp_path):
    """$ROADMAP_FAULT=enospc:last.pt@2: the second checkpoint (end of epoch 2) hits a full disk. The
    command prints one line naming the file and the sizes and exits 1; last.pt is epoch 1's; after
    the fault is lifted the same run resumes from it and equals the uninterrupted run."""
    d, args, reference, ck_bytes = work
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "ROADMAP_FAULT": "enospc:last.pt@2"}
    out = subprocess.run([sys.executable, "-m", "roadmap", *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("error: step baseline failed: DiskFull: "), out.stderr[-3000:]
    needed, _ = one_disk_full_line(lines[0], run_dir / "last.pt")
    assert needed == pytest.approx(ck_bytes / 2 ** 20, rel=0.1)
    assert f"the previous checkpoint {run_dir / 'last.pt'} is intact" in lines[0]
    ck, path = load_checkpoint(run_dir)
    assert path.name == "last.pt" and ck["epoch"] == 1 and not list(run_dir.glob(".*tmp"))
    assert "no space left on device" in json.loads((run_dir / "failed.json").read_text())["reason"]
    run(compose_config(args), run_dir)  # the fault lifted: the same run, resumed
    assert results(run_dir) == reference and not (run_dir / "failed.json").exists()


def test_full_disk_on_a_real_small_file_system_then_the_rerun_resumes(work, small_fs):
    """The run directory on a tmpfs with room for one checkpoint and a half: epoch 2's checkpoint
    fails for real (torch's writer reports it as a RuntimeError around the ENOSPC)."""
    d, args, reference, ck_bytes = work
    fs = small_fs(ck_bytes * 3 // 2)
    run_dir = fs.path / "run"
    with pytest.raises(DiskFull) as e:
        run(compose_config(args), run_dir)
    needed, free = one_disk_full_line(str(e.value), run_dir / "last.pt")
    assert needed == pytest.approx(ck_bytes / 2 ** 20, rel=0.1) and free < needed
    ck, path = load_checkpoint(run_dir)
    assert path.name == "last.pt" and ck["epoch"] == 1 and not list(run_dir.glob(".*tmp"))
    fs.resize(ck_bytes * 4)  # space freed
    run(compose_config(args), run_dir)
    assert results(run_dir) == reference
