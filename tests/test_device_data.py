"""The on-device data path (roadmap/device_data.py) against timm's CPU transforms, on real images:
RandAugment op by op (timm's op list, magnitudes and Pillow ops), random-resized crop, eval crop,
per-sample seeding, and a training run through it."""
import random
import unittest.mock as um
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from roadmap import device_data as dd
from roadmap.data import _decode_resized, scan_folder


@pytest.fixture(scope="module")
def crops(imagenette) -> np.ndarray:
    """12 real Imagenette images, 64 px, uint8 (N, H, W, 3)."""
    _, samples = scan_folder(Path(imagenette) / "train")
    return np.stack([_decode_resized((samples[i][0], 64, "bicubic")) for i in range(0, len(samples), len(samples) // 12)][:12])


def _timm_args(name, magnitude, negate, hparams):
    from timm.data import auto_augment as aa

    level_fn = aa.LEVEL_TO_ARG[name]
    with um.patch.object(aa.random, "random", return_value=0.9 if negate else 0.1):
        return level_fn(magnitude, hparams) if level_fn is not None else ()


def test_randaugment_spec_is_timms_own_parse():
    from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS

    spec = dd.RandAugmentSpec.from_timm("rand-m9-mstd0.5-inc1", 64, "bicubic")
    assert spec.names == list(_RAND_INCREASING_TRANSFORMS) and len(spec.names) == 15
    assert (spec.magnitude, spec.magnitude_std, spec.num_layers, spec.prob) == (9.0, 0.5, 2, 0.5)
    assert spec.hparams["img_mean"] == (124, 116, 104) and spec.hparams["translate_const"] == 28
    with pytest.raises(dd.ConfigError, match="auto_augment='original'.*allowed"):
        dd.RandAugmentSpec.from_timm("original", 64, "bicubic")


def test_magnitudes_match_timms_level_functions():
    spec = dd.RandAugmentSpec.from_timm("rand-m9-mstd0.5-inc1", 64, "bicubic")
    other = dd.RandAugmentSpec.from_timm("rand-m7-mstd0.5", 64, "bicubic")  # the non-increasing op set
    for s in (spec, other):
        for name in s.names:
            for m in np.linspace(0, 10, 21):
                for neg in (False, True):
                    want = _timm_args(name, float(m), neg, s.hparams)
                    got = dd.level_to_arg(name, np.array([m]), np.array([neg]), s.hparams)[0]
                    assert got == pytest.approx(want[0] if want else 0.0, abs=1e-12), (name, m, neg)


def test_magnitude_and_op_draws_follow_timms_distributions():
    spec = dd.RandAugmentSpec.from_timm("rand-m9-mstd0.5-inc1", 64, "bicubic")
    u = dd.sample_uniforms(0, 0, np.arange(40000), dd.Slots.TOTAL)
    d = spec.draw(u, 0)
    counts = np.bincount(d["op"], minlength=15) / len(u)
    assert np.all(np.abs(counts - 1 / 15) < 0.006)            # uniform choice with replacement
    assert abs(d["apply"].mean() - 0.5) < 0.01                   # prob 0.5 per op
    # ColorIncreasing's argument is 1 +- 0.09 * magnitude, magnitude ~ N(9, 0.5) clipped to [0, 10]
    sel = d["op"] == spec.names.index("ColorIncreasing")
    mag = np.abs(d["arg"][sel] - 1) / 0.09
    assert abs(mag.mean() - 8.99) < 0.03 and abs(mag.std() - 0.49) < 0.03 and mag.max() <= 10 + 1e-9
    assert abs((d["arg"][sel] < 1).mean() - 0.5) < 0.03         # random sign
    # two layers draw independently
    assert abs((spec.draw(u, 1)["op"] == d["op"]).mean() - 1 / 15) < 0.006


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
                                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                                  "SharpnessIncreasing", "Rotate", "ShearX", "ShearY", "TranslateXRel",
                                  "TranslateYRel"])
def test_each_op_matches_timm_on_real_images(crops, name):
    from timm.data import auto_augment as aa

    spec = dd.RandAugmentSpec.from_timm("rand-m9-mstd0.5-inc1", 64, "bicubic")
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    for magnitude, negate in ((9.0, False), (10.0, True), (4.0, False)):
        args = _timm_args(name, magnitude, negate, spec.hparams)
        kw = dict(fillcolor=spec.hparams["img_mean"], resample=Image.BICUBIC)
        ref = np.stack([np.asarray(aa.NAME_TO_OP[name](Image.fromarray(im), *args, **kw)) for im in crops])
        arg = torch.full((len(crops),), float(dd.level_to_arg(name, np.array([magnitude]), np.array([negate]),
                                                              spec.hparams)[0]), dtype=torch.float64)
        if name in dd.GEOMETRIC:
            out = dd.geometric(x.clone(), dd._affine(name, arg, 64, 64), torch.ones(len(crops), dtype=torch.long),
                               torch.tensor(spec.hparams["img_mean"]))
        else:
            out = dd.PIXEL_OPS[name](x.clone(), arg.float())
        diff = np.abs(out.permute(0, 2, 3, 1).numpy() - ref)
        if name in dd.GEOMETRIC:
            # torch's bicubic (a=-0.75) vs Pillow's (a=-0.5): small differences at edges; fill and
            # geometry must agree (a wrong angle, sign, centre or fill region moves whole regions)
            assert diff.mean() < 1.2 and np.percentile(diff, 99) <= 8 and diff.max() <= 24, (name, magnitude)
        else:  # Pillow's integer arithmetic, reproduced
            assert diff.mean() < 0.03 and diff.max() <= 1, (name, magnitude)


def test_random_resized_crop_matches_timm(crops):
    from timm.data.transforms import RandomResizedCropAndInterpolation

    src = crops[:, :60, :, :]  # not square: the crop maths must keep rows and columns apart
    x = torch.from_numpy(np.ascontiguousarray(src)).permute(0, 3, 1, 2).float()
    boxes = np.array([[0, 0, 60, 64], [5, 9, 30, 41], [20, 3, 22, 17], [10, 20, 50, 44]] * 3)[:len(src)]
    flip = np.arange(len(src)) % 2 == 1
    theta = torch.as_tensor(dd.crop_theta(boxes, flip, 60, 64))
    for interp in ("bilinear", "bicubic"):
        ours = dd._quantize(dd.resample(x, theta, interp, 48)).permute(0, 2, 3, 1).numpy()
        rrc = RandomResizedCropAndInterpolation(48, interpolation=interp)
        for k, im in enumerate(src):
            with um.patch.object(rrc, "get_params", return_value=tuple(boxes[k])):
                ref = np.asarray(rrc(Image.fromarray(im)))
            ref = ref[:, ::-1] if flip[k] else ref
            diff = np.abs(ours[k] - ref)
            assert diff.mean() < 2.5 and np.percentile(diff, 99) < 16, (interp, k, diff.mean())


def test_crop_parameters_follow_torchvisions_distribution():
    from torchvision.transforms import RandomResizedCrop

    u = dd.sample_uniforms(3, 1, np.arange(20000), dd.Slots.TOTAL)
    ours = dd.rrc_params(u, 73, 73)
    random.seed(0)
    torch.manual_seed(0)
    img = torch.zeros(3, 73, 73)
    ref = np.array([RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(20000)])
    for k in range(4):  # top, left, h, w: mean and spread agree
        assert abs(ours[:, k].mean() - ref[:, k].mean()) < 0.6 and abs(ours[:, k].std() - ref[:, k].std()) < 0.6
    assert (ours[:, 0] + ours[:, 2] <= 73).all() and (ours[:, 1] + ours[:, 3] <= 73).all() and ours.min() >= 0


def test_uniforms_depend_only_on_seed_epoch_index():
    a = dd.sample_uniforms(0, 2, np.array([5, 7, 9]), 8)
    b = dd.sample_uniforms(0, 2, np.array([9, 5]), 8)
    assert np.array_equal(a[0], b[1]) and np.array_equal(a[2], b[0])
    assert not np.array_equal(a[0], dd.sample_uniforms(0, 3, np.array([5]), 8)[0])
    assert not np.array_equal(a[0], dd.sample_uniforms(1, 2, np.array([5]), 8)[0])
    assert 0 <= a.min() and a.max() < 1 and abs(dd.sample_uniforms(0, 0, np.arange(10000), 4).mean() - 0.5) < 0.01


def _cfg(tmp_path, imagenette, *extra):
    from omegaconf import OmegaConf

    from roadmap.steps import compose_config

    cfg = compose_config(["step=separate_downsampling", "scale=smoke", "logger=none", f"data.root={imagenette}",
                          f"data.cache_dir={tmp_path / 'cache'}", "scale.loader=device", "scale.device=cpu",
                          "scale.max_train_samples=40", "scale.max_val_samples=20", "scale.batch_size=8", *extra])
    OmegaConf.resolve(cfg)
    return cfg


def test_device_loader_batches_eval_crop_and_seeding(tmp_path, imagenette):
    from timm.data import create_transform

    from roadmap.data import build_data

    cfg = _cfg(tmp_path, imagenette, "recipe=modern")
    data = build_data(cfg, log_fn=lambda *_: None)
    assert type(data).__name__ == "DeviceData" and data.info["loader"] == "device (cpu)"
    assert len(data.train) == 5 and data.num_classes == 10 and data.skipped_files == 0
    x, y = next(iter(data.train))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isfinite(x).all() and -3 < x.mean() < 3
    # evaluation: exactly timm's eval transform of the cached image
    xv, yv = next(iter(data.val))
    base = data.val.base
    val_t = create_transform(64, is_training=False, interpolation="bicubic", crop_pct=0.875)
    ref = torch.stack([val_t(Image.fromarray(np.asarray(base.images[i]))) for i in range(16)])
    assert xv.shape == (16, 3, 64, 64) and torch.allclose(xv, ref, atol=1e-5)
    assert torch.equal(yv, torch.as_tensor(base.labels[:16], dtype=torch.int64))
    # the same (seed, epoch) gives the same batches; another epoch other ones
    data.train_sampler.set_epoch(1)
    e1 = [b[0] for b in data.train]
    e1b = [b[0] for b in data.train]
    assert all(torch.equal(a, b) for a, b in zip(e1, e1b))
    data.train_sampler.set_epoch(0)
    assert not torch.equal(next(iter(data.train))[0], e1[0])


def test_a_sample_is_augmented_the_same_in_any_batch(tmp_path, imagenette):
    """Per-sample seeding: the classic recipe's crop + flip of image i does not depend on its batch."""
    from roadmap.data import build_data

    cfg = _cfg(tmp_path, imagenette)
    data = build_data(cfg, log_fn=lambda *_: None)
    t, imgs = data.train.transform, data.train.images
    idx = np.array([3, 17, 5, 30])
    full = t(imgs[torch.as_tensor(idx)], idx, 2)
    alone = t(imgs[torch.as_tensor(idx[2:3])], idx[2:3], 2)
    assert torch.equal(full[2:3], alone)


def test_training_with_the_device_loader(tmp_path, imagenette):
    from roadmap.train import run

    cfg = _cfg(tmp_path, imagenette, "recipe=modern", "scale.epochs=1", "scale.max_steps_per_epoch=2",
               "scale.width_mult=0.25")
    m = run(cfg, tmp_path / "run")
    assert m["status"] == "finished" and m["data"]["loader"] == "device (cpu)" and np.isfinite(m["train_loss"])
    assert m["config"]["scale"]["loader"] == "device"


def test_loader_choice_is_validated():
    from roadmap.config import ConfigError, validate
    from roadmap.steps import compose_config

    cfg = compose_config(["scale.loader=gpu"])
    with pytest.raises(ConfigError, match=r"scale.loader='gpu' is invalid; allowed: cpu, device"):
        validate(cfg)
