"""The prepared uint8 cache (roadmap.data.prepare_cache) on a small copy of real Imagenette images:
built once and reused, rebuilt when the size or the source changes, ImageFolder's labels and class
order, and unreadable or missing files reported. Every cache lives under tmp_path."""
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import roadmap.data as data_mod
from roadmap.data import DataError, base_datasets, prepare_cache
from roadmap.steps import compose_config

CLASSES = ["n01440764", "n02979186", "n03888257"]  # tench, cassette player, parachute
PER_CLASS = 10
SIZE = 40


@pytest.fixture(autouse=True)
def _no_home_cache(monkeypatch, tmp_path):
    """Nothing here may touch ~/.cache: the default cache dir points into tmp_path too."""
    monkeypatch.setenv("ROADMAP_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture
def folder(tmp_path, imagenette) -> Path:
    """<tmp>/src/{train,val}/<3 classes>/<10 real JPEGs each> (val: 4 each)."""
    root = tmp_path / "src"
    for split, n in (("train", PER_CLASS), ("val", 4)):
        for c in CLASSES:
            dst = root / split / c
            dst.mkdir(parents=True)
            for f in sorted((imagenette / split / c).iterdir())[:n]:
                shutil.copy2(f, dst / f.name)
    return root


def build(folder: Path, cache: Path, size: int = SIZE, max_samples=None):
    return prepare_cache("tiny", "train", folder / "train", size, cache, max_samples, workers=1)


def cache_files(cache: Path):
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))


def reference_image(path: str, size: int) -> np.ndarray:
    """Full decode, shorter side -> size (bicubic), centre crop: what the cache should hold."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def test_built_once_then_reused_without_decoding(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    ds, info = build(folder, cache)
    assert info.built and len(ds) == 3 * PER_CLASS and info.skipped == []
    assert ds.images.shape == (3 * PER_CLASS, SIZE, SIZE, 3) and ds.images.dtype == np.uint8
    assert isinstance(ds.images, np.memmap)  # memory-mapped, not loaded
    files = cache_files(cache)
    assert len(files) == 3 and {Path(f).suffixes[-1] for f in files} == {".npy", ".json"}
    mtimes = {f: (cache / f).stat().st_mtime_ns for f in files}

    def no_decode(*args, **kwargs):
        raise AssertionError("the second build decoded an image")

    monkeypatch.setattr(data_mod, "_decode_resized", no_decode)
    ds2, info2 = build(folder, cache)
    assert not info2.built and info2.path == info.path
    assert cache_files(cache) == files and {f: (cache / f).stat().st_mtime_ns for f in files} == mtimes
    np.testing.assert_array_equal(np.asarray(ds2.images), np.asarray(ds.images))
    np.testing.assert_array_equal(ds2.labels, ds.labels)


def test_build_data_uses_the_cache_dir_and_reuses_it(folder, tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config(["data=imagefolder", f"data.root={folder}", f"data.cache_dir={cache}", "scale=smoke",
                          "scale.max_train_samples=null", "scale.max_val_samples=null", "logger=none"])
    train, val, info = base_datasets(cfg)
    size = info["cache_train"]["size"]
    assert info["cache"] and info["cache_train"]["built"] and info["cache_val"]["built"]
    assert size == 73  # 64 px / crop_pct 0.875: the eval resize, the margin for train crops
    assert Path(info["cache_train"]["path"]).parent == cache and len(train) == 30 and len(val) == 12
    assert not (tmp_path / "env-cache").exists()  # data.cache_dir wins over $ROADMAP_CACHE
    _, _, again = base_datasets(cfg)
    assert not again["cache_train"]["built"] and not again["cache_val"]["built"]
    assert again["cache_train"]["path"] == info["cache_train"]["path"]


def test_default_cache_dir_follows_roadmap_cache_env(folder, tmp_path):
    cfg = compose_config(["data=imagefolder", f"data.root={folder}", "scale=smoke", "scale.max_train_samples=null",
                          "scale.max_val_samples=null", "logger=none"])
    _, _, info = base_datasets(cfg)
    assert Path(info["cache_train"]["path"]).parent == tmp_path / "env-cache"


def test_size_change_builds_another_cache_and_keeps_the_first(folder, tmp_path):
    cache = tmp_path / "cache"
    ds40, i40 = build(folder, cache, 40)
    ds48, i48 = build(folder, cache, 48)
    assert i48.built and i48.path != i40.path and ds48.images.shape[1:] == (48, 48, 3)
    assert i40.path.exists() and i48.path.exists()
    assert not build(folder, cache, 40)[1].built and not build(folder, cache, 48)[1].built
    # a class-balanced subset is its own cache too
    sub, isub = build(folder, cache, 40, max_samples=6)
    assert isub.built and len(sub) == 6 and sorted(sub.labels.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("change", ["add", "remove", "modify", "touch"])
def test_source_change_rebuilds_and_replaces_the_old_cache(folder, tmp_path, change):
    cache = tmp_path / "cache"
    ds, info = build(folder, cache)
    cls = folder / "train" / CLASSES[1]
    victim = sorted(cls.iterdir())[0]
    n = len(ds)
    if change == "add":
        shutil.copy2(victim, cls / "zz_extra.JPEG")
        n += 1
    elif change == "remove":
        victim.unlink()
        n -= 1
    elif change == "modify":  # same name, other content (another real image)
        other = sorted((folder / "train" / CLASSES[0]).iterdir())[0]
        shutil.copyfile(other, victim)
    else:  # same bytes, new mtime
        st = victim.stat()
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    ds2, info2 = build(folder, cache)
    assert info2.built and info2.path != info.path and len(ds2) == n
    assert not info.path.exists() and len(list(cache.glob("*.json"))) == 1  # the stale cache is removed
    if change == "modify":
        i = int(np.flatnonzero(ds2.labels == 1)[0])
        assert not np.array_equal(np.asarray(ds2.images[i]), np.asarray(ds.images[i]))
    assert not build(folder, cache)[1].built


def test_labels_class_order_and_pixels_match_imagefolder(folder, tmp_path):
    from torchvision.datasets import ImageFolder

    tv = ImageFolder(str(folder / "train"))
    ds, _ = build(folder, tmp_path / "cache")
    assert ds.classes == tv.classes == CLASSES
    assert ds.labels.tolist() == tv.targets and ds.targets == tv.targets
    meta = json.loads(info_json(tmp_path / "cache").read_text())
    assert meta["classes"] == tv.classes and meta["count"] == len(tv)
    # image i of the cache is ImageFolder's sample i, resized and centre-cropped
    for i in range(len(tv)):
        ref = reference_image(tv.samples[i][0], SIZE).astype(np.int16)
        got = np.asarray(ds.images[i]).astype(np.int16)
        assert np.abs(got - ref).mean() < 6, (i, tv.samples[i][0], np.abs(got - ref).mean())
    # the PIL view the transforms see
    img, y = ds[len(ds) - 1]
    assert img.size == (SIZE, SIZE) and img.mode == "RGB" and y == tv.targets[-1]


def info_json(cache: Path) -> Path:
    (path,) = cache.glob("*.json")
    return path


@pytest.mark.parametrize("damage,reason", [("garbage", "not an image PIL can identify"),
                                           ("truncated", "Truncated File Read"), ("empty", "empty file (0 bytes)")])
def test_corrupt_image_is_skipped_counted_and_named(folder, tmp_path, damage, reason):
    from torchvision.datasets import ImageFolder

    cls = folder / "train" / CLASSES[1]
    bad = sorted(cls.iterdir())[3]
    if damage == "garbage":
        bad.write_bytes(b"this is not a JPEG" * 100)
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:600])
    else:
        bad.write_bytes(b"")
    tv = ImageFolder(str(folder / "train"))
    bad_index = [p for p, _ in tv.samples].index(str(bad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named by the caller's log line (roadmap.images), not a Python warning
        ds, info = build(folder, tmp_path / "cache")
    rel = f"{CLASSES[1]}/{bad.name}"
    assert info.skipped == [rel] and ds.skipped_files == 1 and info.refused == {rel: reason}
    meta = json.loads(info_json(tmp_path / "cache").read_text())
    assert meta["skipped"] == [rel] and meta["refused"] == {rel: reason}
    # the readable images keep ImageFolder's order and labels
    expected = [y for i, y in enumerate(tv.targets) if i != bad_index]
    assert len(ds) == len(tv) - 1 and ds.labels.tolist() == expected
    assert ds.images.shape[0] == len(ds)
    # reusing the cache keeps the report, without decoding (or warning) again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds2, info2 = build(folder, tmp_path / "cache")
    assert not info2.built and info2.refused == {rel: reason} and ds2.skipped_files == 1


def test_corrupt_image_reaches_skipped_files_of_build_data(folder, tmp_path):
    from roadmap.data import build_data

    bad = sorted((folder / "val" / CLASSES[0]).iterdir())[0]
    bad.write_bytes(b"\xff\xd8\xff broken")
    cfg = compose_config(["data=imagefolder", f"data.root={folder}", f"data.cache_dir={tmp_path / 'cache'}",
                          "scale=smoke", "scale.max_train_samples=null", "scale.max_val_samples=null",
                          "scale.workers=0", "logger=none", "model.num_classes=3"])
    lines = []
    data = build_data(cfg, log_fn=lines.append)
    assert data.skipped_files == 1 and data.info["val_images"] == 11 and data.info["train_images"] == 30
    assert data.skipped_by_split() == {"train": 0, "val": 1}
    assert lines[0].startswith("train data: 30 images of 3 classes from the prepared cache ") and "none refused" in lines[0]
    assert lines[1].startswith("val data: 11 images of 3 classes from the prepared cache ")
    assert lines[1].endswith(f"; 1 refused and skipped: {CLASSES[0]}/{bad.name} (not an image PIL can identify)")


def test_file_missing_while_building_is_skipped_and_named(folder, tmp_path, monkeypatch):
    """A file listed by the scan but gone when it is decoded (deleted meanwhile)."""
    cls = folder / "train" / CLASSES[2]
    gone = sorted(cls.iterdir())[5]
    real_fp = data_mod.fingerprint

    def fingerprint_then_delete(samples, root):
        fp = real_fp(samples, root)
        gone.unlink()  # after the listing and the fingerprint, before decoding
        return fp

    monkeypatch.setattr(data_mod, "fingerprint", fingerprint_then_delete)
    ds, info = build(folder, tmp_path / "cache")
    assert info.refused == {f"{CLASSES[2]}/{gone.name}": "No such file or directory (ENOENT)"}
    assert len(ds) == 3 * PER_CLASS - 1
    assert ds.labels.tolist() == [0] * 10 + [1] * 10 + [2] * 9


def test_missing_source_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"data split folder .*nowhere.*train.* does not exist"):
        prepare_cache("tiny", "train", tmp_path / "nowhere" / "train", SIZE, tmp_path / "cache")
    empty = tmp_path / "empty" / "train" / "a"
    empty.mkdir(parents=True)
    with pytest.raises(DataError, match="no images in"):
        prepare_cache("tiny", "train", empty.parent, SIZE, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.json"))


def test_missing_symlinked_file_and_mixed_case_extension_match_imagefolder(folder, tmp_path):
    from torchvision.datasets import ImageFolder

    cls = folder / "train" / CLASSES[0]
    (cls / "zz_gone.JPEG").symlink_to(tmp_path / "nowhere.JPEG")  # a missing source file
    shutil.copy2(sorted(cls.iterdir())[0], folder / "train" / CLASSES[1] / "zz_upper.Jpeg")
    tv = ImageFolder(str(folder / "train"))
    ds, info = build(folder, tmp_path / "cache")
    assert info.refused == {f"{CLASSES[0]}/zz_gone.JPEG": "a symbolic link to a missing file (ENOENT)"}  # named
    assert ds.labels.tolist() == [y for p, y in tv.samples if not p.endswith("zz_gone.JPEG")]
