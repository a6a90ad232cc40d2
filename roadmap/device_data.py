"""The on-device data path (`scale.loader=device`): images held on the device as uint8, every
augmentation of the recipe applied there to whole batches.

    python -m roadmap.device_data bench [--device cuda] [--recipe modern] [--batch 128] [--seconds 5]

What the CPU path (`roadmap.data`, timm's transforms on PIL images) does per image, this does per
batch on the training device, in the same order and with the same parameter distributions:

  RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, 10 attempts then the centre fallback:
  torchvision's algorithm) + horizontal flip (p 0.5), as one `grid_sample` per batch with the
  recipe's interpolation; RandAugment with timm's own op list and magnitudes (parsed by timm from
  the recipe's string, e.g. `rand-m9-mstd0.5-inc1`; each op re-implemented on uint8-valued tensors
  after Pillow's definition, `tests/test_device_data.py` compares them op by op with timm's);
  normalisation; random erasing (timm's area/aspect distribution, per-pixel normal noise).
  Evaluation: the centre crop of the prepared cache image (timm's eval transform of an image that
  already has the eval-resize size is exactly that crop). Mixup/CutMix stay timm's `Mixup` in the
  train loop, which runs wherever the batch is.

Differences from the CPU path, by construction: interpolation kernels are torch's (bicubic
a = -0.75, no antialiasing when a crop is shrunk by at most 73/64) where Pillow's are bicubic
a = -0.5 with antialiasing; RandAugment's geometric ops fill and interpolate as Pillow does up to
those kernels. So `scale.loader` is part of a run's identity (a run is not resumed with the other).

Randomness: every random number of sample i in epoch e comes from a counter-based hash of
(seed, epoch, i, slot) (splitmix64), so a sample's augmentation depends neither on the batch it
lands in, nor on timing, nor on the device; the erasing noise comes from a generator seeded by
(seed, epoch, batch number). Resuming at an epoch boundary reproduces the same stream.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError
from .loading import Data, EpochSampler, cache_size_for

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM

# ---------------------------------------------------------------------------------------------
# Counter-based random numbers: uniform[i, slot] = f(seed, epoch, index_i, slot)
# ---------------------------------------------------------------------------------------------
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_uniforms(seed: int, epoch: int, indices: np.ndarray, slots: int) -> np.ndarray:
    """float64 (len(indices), slots) in [0, 1), a pure function of (seed, epoch, index, slot)."""
    key = np.uint64((seed * 1_000_003 + epoch * 10_007) % 2 ** 63)
    with np.errstate(over="ignore"):
        base = _splitmix(key + _splitmix(indices.astype(np.uint64) + np.uint64(1)) * _GOLDEN)
        z = _splitmix(base[:, None] + np.arange(1, slots + 1, dtype=np.uint64)[None, :] * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class Slots:
    """Column layout of the per-sample uniform table."""
    RRC = 0            # 10 attempts x (area, log ratio, top, left)
    FLIP = 40
    INTERP = 41        # train_interpolation=random: bilinear or bicubic
    RA = 42            # per layer: op, apply?, gauss u1, gauss u2, sign, interpolation (6 each, <= 8 layers)
    ERASE = 90         # apply?, then 10 attempts x (area, log aspect, top, left)
    TOTAL = 131


# ---------------------------------------------------------------------------------------------
# Random-resized crop (torchvision's RandomResizedCrop.get_params, vectorised) + flip
# ---------------------------------------------------------------------------------------------
def rrc_params(u: np.ndarray, height: int, width: int, scale: Tuple[float, float] = (0.08, 1.0),
               ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """(top, left, h, w) per row of `u` (its RRC slots), as torchvision draws them."""
    n, area = len(u), height * width
    out = np.zeros((n, 4), dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for a in range(10):
        c = Slots.RRC + 4 * a
        target_area = (scale[0] + (scale[1] - scale[0]) * u[:, c]) * area
        aspect = np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[:, c + 1])
        w = np.round(np.sqrt(target_area * aspect)).astype(np.int64)  # Python's round: half to even, as np.round
        h = np.round(np.sqrt(target_area / aspect)).astype(np.int64)
        ok = ~done & (w <= width) & (h <= height)
        top = np.floor(u[:, c + 2] * (height - h + 1)).astype(np.int64)  # randint(0, H - h)
        left = np.floor(u[:, c + 3] * (width - w + 1)).astype(np.int64)
        out[ok] = np.stack([top, left, h, w], 1)[ok]
        done |= ok
    if not done.all():  # the centre fallback
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        out[~done] = [(height - h) // 2, (width - w) // 2, h, w]
    return out


def crop_theta(boxes: np.ndarray, flip: np.ndarray, height: int, width: int) -> np.ndarray:
    """affine_grid matrices (align_corners=False) sampling box (top, left, h, w), mirrored where flip."""
    top, left, h, w = (boxes[:, k].astype(np.float64) for k in range(4))
    theta = np.zeros((len(boxes), 2, 3))
    theta[:, 0, 0] = np.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    return theta


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """Back to uint8 levels (PIL images are uint8 between operations)."""
    return x.round_().clamp_(0, 255)


def resample(x: torch.Tensor, theta: torch.Tensor, mode: str, size: int) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------------------------
# RandAugment ops on float tensors holding uint8 levels, shape (n, 3, H, W); Pillow's definitions
# ---------------------------------------------------------------------------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, x, factor): truncated towards zero, clipped."""
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    return torch.trunc(degenerate + f * (x - degenerate)).clamp_(0, 255)


def op_auto_contrast(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1)
    out = torch.floor(x * scale - lo * scale).clamp_(0, 255)
    return torch.where(hi > lo, out, x)


def op_equalize(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize per channel (Pillow: step = (total - last non-empty bin) // 255)."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    last = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1)  # index of the last non-empty bin
    step = (h * w - hist.gather(1, last[:, None]).squeeze(1)) // 255
    before = torch.cumsum(hist, 1) - hist  # pixels in lower bins
    lut = (step[:, None] // 2 + before) // step.clamp(min=1)[:, None]
    lut = torch.where(step[:, None] > 0, lut.clamp(max=255), torch.arange(256, device=x.device)[None, :])
    return lut.gather(1, flat).reshape(n, c, h, w).to(x.dtype)


def op_invert(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return 255 - x


def op_posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep `bits` most significant bits (0 bits: black, as Pillow <= 12 gives)."""
    q = torch.pow(2.0, 8 - bits.to(x.dtype)).view(-1, 1, 1, 1)
    return torch.floor(x / q) * q


def op_solarize(x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    return torch.where(x < thresh.view(-1, 1, 1, 1).to(x.dtype), x, 255 - x)


def op_solarize_add(x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 128, (x + add.view(-1, 1, 1, 1).to(x.dtype)).clamp(max=255), x)


def op_color(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(_gray(x).expand_as(x), x, f)


def op_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = torch.floor(_gray(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, f)


def op_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(x), x, f)


def op_sharpness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with ImageFilter.SMOOTH ([[1,1,1],[1,5,1],[1,1,1]] / 13; border pixels unfiltered)."""
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5
    k = (k / 13).expand(x.shape[1], 1, 3, 3)
    smooth = torch.floor(F.conv2d(x, k, groups=x.shape[1]) + 0.5).clamp_(0, 255)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, f)


def pil_affine_theta(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's AFFINE data (a, b, c, d, e, f), output pixel (x, y) -> input (a x + b y + c, d x + e y + f)
    in pixel units with centres at +0.5, as affine_grid matrices (align_corners=False)."""
    a, b, c, d, e, f = m.unbind(1)
    theta = torch.stack([
        torch.stack([a, b * height / width, a + b * height / width + 2 * c / width - 1], 1),
        torch.stack([d * width / height, e, d * width / height + e + 2 * f / height - 1], 1)], 1)
    return theta


def geometric(x: torch.Tensor, m: torch.Tensor, modes: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Image.transform(AFFINE, m, resample, fillcolor) for a batch: outside the source -> fill;
    modes: 0 bilinear, 1 bicubic per sample."""
    n, _, h, w = x.shape
    theta = pil_affine_theta(m.to(x.dtype), h, w)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    out = torch.empty_like(x)
    for code, mode in ((0, "bilinear"), (1, "bicubic")):
        sel = modes == code
        if sel.any():
            out[sel] = F.grid_sample(x[sel], grid[sel], mode=mode, padding_mode="border", align_corners=False)
    # Pillow fills where the sample point (pixel units, image spanning [0, w) x [0, h)) is outside
    px = (grid[..., 0] + 1) * w / 2
    py = (grid[..., 1] + 1) * h / 2
    inside = ((px >= 0) & (px < w) & (py >= 0) & (py < h)).unsqueeze(1)
    return _quantize(torch.where(inside, out, fill.view(1, 3, 1, 1).to(x.dtype)))


def _affine_rotate(deg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Image.rotate(deg) about the centre, as its AFFINE data."""
    ang = -torch.deg2rad(deg)
    a, b, d, e = torch.cos(ang), torch.sin(ang), -torch.sin(ang), torch.cos(ang)
    cx, cy = w / 2.0, h / 2.0
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return torch.stack([a, b, c, d, e, f], 1)


def _affine(kind: str, v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    if kind == "Rotate":
        return _affine_rotate(v, h, w)
    if kind == "ShearX":
        return torch.stack([one, v, zero, zero, one, zero], 1)
    if kind == "ShearY":
        return torch.stack([one, zero, zero, v, one, zero], 1)
    if kind in ("TranslateXRel", "TranslateX"):
        px = v * w if kind == "TranslateXRel" else v
        return torch.stack([one, zero, px, zero, one, zero], 1)
    py = v * h if kind == "TranslateYRel" else v
    return torch.stack([one, zero, zero, zero, one, py], 1)


GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "TranslateX", "TranslateY")
PIXEL_OPS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "AutoContrast": op_auto_contrast, "Equalize": op_equalize, "Invert": op_invert,
    "Posterize": op_posterize, "PosterizeIncreasing": op_posterize, "PosterizeOriginal": op_posterize,
    "Solarize": op_solarize, "SolarizeIncreasing": op_solarize, "SolarizeAdd": op_solarize_add,
    "Color": op_color, "ColorIncreasing": op_color, "Contrast": op_contrast, "ContrastIncreasing": op_contrast,
    "Brightness": op_brightness, "BrightnessIncreasing": op_brightness,
    "Sharpness": op_sharpness, "SharpnessIncreasing": op_sharpness,
}
SUPPORTED_OPS = tuple(PIXEL_OPS) + GEOMETRIC


def level_to_arg(name: str, level: np.ndarray, negate: np.ndarray, hparams: Dict[str, Any]) -> np.ndarray:
    """timm's LEVEL_TO_ARG[name], vectorised; `negate` replaces its `random.random() > 0.5`."""
    t = level / LEVEL_DENOM
    sign = np.where(negate, -1.0, 1.0)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return np.zeros_like(level)
    if name == "Rotate":
        return sign * t * 30.0
    if name in ("ShearX", "ShearY"):
        return sign * t * 0.3
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * t * hparams.get("translate_pct", 0.45)
    if name in ("TranslateX", "TranslateY"):
        return sign * t * float(hparams["translate_const"])
    if name == "Posterize":
        return np.floor(t * 4)
    if name == "PosterizeIncreasing":
        return 4 - np.floor(t * 4)
    if name == "PosterizeOriginal":
        return np.floor(t * 4) + 4
    if name == "Solarize":
        return np.minimum(256, np.floor(t * 256))
    if name == "SolarizeIncreasing":
        return 256 - np.minimum(256, np.floor(t * 256))
    if name == "SolarizeAdd":
        return np.minimum(128, np.floor(t * 110))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return t * 1.8 + 0.1
    if name.endswith("Increasing"):  # Color/Contrast/Brightness/SharpnessIncreasing
        return np.maximum(0.1, 1.0 + sign * t * 0.9)
    raise KeyError(name)


@dataclass
class RandAugmentSpec:
    """timm's RandAugment, as timm parses the recipe's string."""
    names: List[str]
    prob: float
    magnitude: float
    magnitude_std: float
    magnitude_max: Optional[float]
    num_layers: int
    choice_weights: Optional[np.ndarray]
    hparams: Dict[str, Any]
    interpolation: Optional[str]  # None: timm's random bilinear/bicubic per op

    @classmethod
    def from_timm(cls, config_str: str, img_size: int, interpolation: str,
                  mean: Sequence[float] = IMAGENET_MEAN) -> "RandAugmentSpec":
        from timm.data.auto_augment import rand_augment_transform
        from timm.data.transforms import str_to_pil_interp

        if not config_str.startswith("rand"):
            raise ConfigError(f"recipe.auto_augment={config_str!r} with scale.loader=device; allowed: RandAugment "
                              f"policies ('rand-...', e.g. rand-m9-mstd0.5-inc1), or scale.loader=cpu")
        # the hparams timm's create_transform passes (transforms_imagenet_train)
        hparams: Dict[str, Any] = dict(translate_const=int(img_size * 0.45),
                                       img_mean=tuple(min(255, round(255 * x)) for x in mean))
        if interpolation != "random":
            hparams["interpolation"] = str_to_pil_interp(interpolation)
        ra = rand_augment_transform(config_str, dict(hparams))
        ops = list(ra.ops)
        unknown = [op.name for op in ops if op.name not in SUPPORTED_OPS]
        if unknown:
            raise ConfigError(f"recipe.auto_augment={config_str!r}: ops {unknown} have no device version; "
                              f"allowed ops: {', '.join(SUPPORTED_OPS)}, or scale.loader=cpu")
        op0 = ops[0]
        weights = None if ra.choice_weights is None else np.asarray(ra.choice_weights, dtype=np.float64)
        if weights is not None:  # timm draws without replacement then: not vectorised here
            raise ConfigError(f"recipe.auto_augment={config_str!r}: weighted op choice has no device version; "
                              f"allowed: unweighted rand-* policies, or scale.loader=cpu")
        if ra.num_layers > 8:
            raise ConfigError(f"recipe.auto_augment={config_str!r}: n={ra.num_layers} layers; allowed: at most 8")
        interp = None if interpolation == "random" else interpolation
        return cls([op.name for op in ops], op0.prob, float(op0.magnitude), float(op0.magnitude_std),
                   op0.magnitude_max, ra.num_layers, weights, op0.hparams, interp)

    def draw(self, u: np.ndarray, layer: int) -> Dict[str, np.ndarray]:
        """This layer's (op index, applied?, op argument, bicubic?) per sample from its uniform slots."""
        c = Slots.RA + 6 * layer
        n_ops = len(self.names)
        op = np.minimum((u[:, c] * n_ops).astype(np.int64), n_ops - 1)  # np.random.choice, uniform, replace
        apply = ~(u[:, c + 1] > self.prob) if self.prob < 1.0 else np.ones(len(u), dtype=bool)
        mag = np.full(len(u), self.magnitude)
        if self.magnitude_std == float("inf"):
            mag = u[:, c + 2] * self.magnitude
        elif self.magnitude_std > 0:  # random.gauss: Box-Muller from two uniforms
            z = np.sqrt(-2.0 * np.log1p(-u[:, c + 2])) * np.cos(2 * np.pi * u[:, c + 3])
            mag = self.magnitude + self.magnitude_std * z
        mag = np.clip(mag, 0.0, self.magnitude_max or LEVEL_DENOM)
        negate = u[:, c + 4] > 0.5
        arg = np.zeros(len(u))
        for k, name in enumerate(self.names):
            sel = op == k
            if sel.any():
                arg[sel] = level_to_arg(name, mag[sel], negate[sel], self.hparams)
        bicubic = (u[:, c + 5] < 0.5) if self.interpolation is None else np.full(len(u), self.interpolation == "bicubic")
        return {"op": op, "apply": apply, "arg": arg, "bicubic": bicubic}

    def apply(self, x: torch.Tensor, u: np.ndarray) -> torch.Tensor:
        h, w = x.shape[-2:]
        fill = torch.tensor(self.hparams["img_mean"], device=x.device)
        for layer in range(self.num_layers):
            d = self.draw(u, layer)
            geo_rows, geo_m, geo_modes = [], [], []
            for k, name in enumerate(self.names):
                rows = np.nonzero((d["op"] == k) & d["apply"])[0]
                if len(rows) == 0:
                    continue
                arg = torch.as_tensor(d["arg"][rows], dtype=torch.float64)
                if name in GEOMETRIC:
                    geo_rows.append(rows)
                    geo_m.append(_affine(name, arg, h, w))
                    geo_modes.append(torch.as_tensor(d["bicubic"][rows].astype(np.int64)))
                    continue
                idx = torch.as_tensor(rows, device=x.device)
                x[idx] = PIXEL_OPS[name](x[idx], arg.to(device=x.device, dtype=x.dtype))
            if geo_rows:
                idx = torch.as_tensor(np.concatenate(geo_rows), device=x.device)
                m = torch.cat(geo_m).to(device=x.device)
                x[idx] = geometric(x[idx], m, torch.cat(geo_modes).to(x.device), fill)
        return x


# ---------------------------------------------------------------------------------------------
# The batch transform
# ---------------------------------------------------------------------------------------------
def erase_params(u: np.ndarray, prob: float, height: int, width: int, min_area: float = 0.02,
                 max_area: float = 1 / 3, min_aspect: float = 0.3) -> np.ndarray:
    """timm RandomErasing (count 1): (top, left, h, w) per row, h = 0 where nothing is erased."""
    n, area = len(u), height * width
    out = np.zeros((n, 4), dtype=np.int64)
    todo = ~(u[:, Slots.ERASE] > prob)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for a in range(10):
        c = Slots.ERASE + 1 + 4 * a
        target = (min_area + (max_area - min_area) * u[:, c]) * area
        aspect = np.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * u[:, c + 1])
        h = np.round(np.sqrt(target * aspect)).astype(np.int64)
        w = np.round(np.sqrt(target / aspect)).astype(np.int64)
        ok = todo & (w < width) & (h < height)
        top = np.floor(u[:, c + 2] * (height - h + 1)).astype(np.int64)
        left = np.floor(u[:, c + 3] * (width - w + 1)).astype(np.int64)
        out[ok] = np.stack([top, left, h, w], 1)[ok]
        todo &= ~ok
    return out


class BatchTransform:
    """uint8 (B, S, S, 3) images on the device -> normalised float (B, 3, size, size), per `recipe`."""

    def __init__(self, recipe: Any, img_size: int, train: bool, seed: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.recipe, self.size, self.train, self.seed = recipe, img_size, train, seed
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.ra = None
        if train and recipe.auto_augment:
            self.ra = RandAugmentSpec.from_timm(recipe.auto_augment, img_size, recipe.train_interpolation, mean)
        self.reprob = float(recipe.reprob) if train else 0.0
        self._norm: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._norm:
            self._norm[x.device] = (self.mean.to(x.device), self.std.to(x.device))
        mean, std = self._norm[x.device]
        return x.sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor, indices: np.ndarray, epoch: int, batch_no: int = 0) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        s = x.shape[-1]
        if not self.train:  # timm eval: resize to the cache size (identity here), centre crop
            top = int(round((x.shape[-2] - self.size) / 2.0))
            left = int(round((s - self.size) / 2.0))
            return self._normalise(x[:, :, top:top + self.size, left:left + self.size].contiguous())
        u = sample_uniforms(self.seed, epoch, indices, Slots.TOTAL)
        boxes = rrc_params(u, x.shape[-2], s)
        theta = torch.as_tensor(crop_theta(boxes, u[:, Slots.FLIP] < 0.5, x.shape[-2], s), device=x.device)
        interp = self.recipe.train_interpolation
        if interp == "random":
            bicubic = torch.as_tensor(u[:, Slots.INTERP] < 0.5, device=x.device)
            out = torch.empty(x.shape[0], 3, self.size, self.size, device=x.device)
            for flag, mode in ((False, "bilinear"), (True, "bicubic")):
                sel = bicubic == flag
                if sel.any():
                    out[sel] = resample(x[sel], theta[sel], mode, self.size)
            x = out
        else:
            x = resample(x, theta, interp, self.size)
        x = _quantize(x)  # PIL's crop is a uint8 image
        if self.ra is not None:
            x = self.ra.apply(x, u)
        x = self._normalise(x)
        if self.reprob > 0:
            box = erase_params(u, self.reprob, self.size, self.size)
            rows = np.nonzero(box[:, 2] > 0)[0]
            if len(rows):
                g = torch.Generator(device=x.device)
                g.manual_seed(int(_splitmix(np.asarray([self.seed * 1_000_003 + epoch * 10_007 + batch_no * 7919 + 1],
                                                       dtype=np.uint64))[0] % 2 ** 63))
                noise = torch.randn(len(rows), 3, self.size, self.size, generator=g, device=x.device)
                ar = torch.arange(self.size, device=x.device)
                b = torch.as_tensor(box[rows], device=x.device)
                ys = (ar[None, :] >= b[:, 0:1]) & (ar[None, :] < b[:, 0:1] + b[:, 2:3])
                xs = (ar[None, :] >= b[:, 1:2]) & (ar[None, :] < b[:, 1:2] + b[:, 3:4])
                mask = (ys[:, :, None] & xs[:, None, :]).unsqueeze(1)
                idx = torch.as_tensor(rows, device=x.device)
                x[idx] = torch.where(mask, noise, x[idx])
        return x


# ---------------------------------------------------------------------------------------------
# Loader: iterates an EpochSampler's order in batches, everything on the device
# ---------------------------------------------------------------------------------------------
class DeviceLoader:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sampler: EpochSampler, batch_size: int,
                 transform: BatchTransform, drop_last: bool, base: Any):
        self.images, self.labels, self.sampler = images, labels, sampler
        self.batch_size, self.transform, self.drop_last, self.base = batch_size, transform, drop_last, base

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = np.asarray([i for i, _ in self.sampler], dtype=np.int64)
        epoch = self.sampler.epoch
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            t = torch.as_tensor(idx, device=self.images.device)
            yield self.transform(self.images[t], idx, epoch, b), self.labels[t]


def _as_uint8(ds: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 images and labels of a base dataset (prepared cache, CIFAR, synthetic)."""
    if hasattr(ds, "images") and hasattr(ds, "labels"):  # roadmap.data.ArrayImages (the prepared cache)
        return np.asarray(ds.images), np.asarray(ds.labels, dtype=np.int64)
    if isinstance(getattr(ds, "data", None), np.ndarray) and ds.data.ndim == 4:  # torchvision CIFAR
        return ds.data, np.asarray(ds.targets, dtype=np.int64)
    if type(ds).__name__ == "RandomImages":
        return np.stack([np.asarray(ds[i][0]) for i in range(len(ds))]), np.asarray(ds.targets, dtype=np.int64)
    raise ConfigError("scale.loader=device needs images of one size in memory; allowed with data.cache=true "
                      "(the prepared cache), data=cifar10|cifar100|synthetic; or scale.loader=cpu")


def loader_device(scale: Any) -> torch.device:
    """Where the training process puts the model (train.setup_env's rule)."""
    if scale.device == "cpu" or (scale.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


class DeviceData(Data):
    """Data whose loaders are DeviceLoaders (the images on the device)."""


def build_device_data(cfg: Any, train_base: Any, val_base: Any, info: Dict[str, Any], rank: int = 0, world: int = 1,
                      device: Optional[torch.device] = None) -> Data:
    """roadmap.data.build_data's result with the on-device loaders, from its base datasets."""
    classes = list(train_base.classes)
    device = device or loader_device(cfg.scale)
    img, eval_img = cfg.scale.img_size, cfg.scale.eval_img_size or cfg.scale.img_size
    loaders = []
    for base, train in ((train_base, True), (val_base, False)):
        arr, labels = _as_uint8(base)
        size = img if train else eval_img
        if min(arr.shape[1:3]) < size:
            raise ConfigError(f"scale.loader=device: stored images are {arr.shape[1]} px, smaller than "
                              f"{size} px; allowed: data.cache=true (it stores img_size / crop_pct)")
        sampler = EpochSampler(len(labels), cfg.seed, shuffle=train, rank=rank, world=world, pad=train)
        images = torch.from_numpy(np.array(arr)).to(device)  # a copy: the cache is a read-only memory map
        loaders.append((DeviceLoader(images, torch.from_numpy(labels).to(device), sampler,
                                     cfg.scale.batch_size * (1 if train else 2),
                                     BatchTransform(cfg.recipe, size, train, cfg.seed), drop_last=train, base=base),
                        sampler))
    (train, train_sampler), (val, _) = loaders
    info.update(train_images=len(train_base), val_images=len(val_base), classes=len(classes),
                loader=f"device ({device.type})")
    return DeviceData(train, val, train_sampler, len(classes), classes, info)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Throughput: python -m roadmap.device_data bench
# ---------------------------------------------------------------------------------------------
def bench_loader(recipe: str = "modern", device: str = "cpu", batch: int = 128, img_size: int = 64,
                 n_images: int = 2048, seconds: float = 5.0, threads: Optional[int] = None) -> Dict[str, Any]:
    """img/s of the device loader's train transform on random uint8 images at the proxy's cache size."""
    from omegaconf import OmegaConf

    from .steps import compose_config  # Hydra's compose: only the bench needs it

    if threads:
        torch.set_num_threads(threads)
    cfg = compose_config([f"recipe={recipe}"])
    OmegaConf.resolve(cfg)
    s = cache_size_for(img_size, cfg.recipe.crop_pct)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, s, s, 3), dtype=torch.uint8, generator=g).to(dev)
    t = BatchTransform(cfg.recipe, img_size, train=True, seed=0)
    order = np.random.default_rng(0).permutation(n_images)
    done, t0, b = 0, None, 0
    while True:
        idx = order[(b * batch) % (n_images - batch):][:batch]
        x = t(images[torch.as_tensor(idx, device=dev)], idx, 0, b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        b += 1
        if b == 2:  # after warm-up
            t0 = time.perf_counter()
        elif b > 2:
            done += batch
            if time.perf_counter() - t0 >= seconds:
                break
    rate = done / (time.perf_counter() - t0)
    return {"recipe": recipe, "device": device, "batch": batch, "img_size": img_size, "cache_size": s,
            "threads": torch.get_num_threads(), "img_s": rate, "out_shape": list(x.shape)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.device_data")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="img/s of the on-device train transform")
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    b.add_argument("--recipe", nargs="+", default=["classic", "modern"])
    b.add_argument("--batch", type=int, default=128)
    b.add_argument("--img-size", type=int, default=64)
    b.add_argument("--seconds", type=float, default=5.0)
    b.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    for r in args.recipe:
        res = bench_loader(r, args.device, args.batch, args.img_size, seconds=args.seconds, threads=args.threads)
        print(f"device loader, {res['recipe']} recipe, {res['device']} ({res['threads']} threads), batch "
              f"{res['batch']}, {res['cache_size']} -> {res['img_size']} px: {res['img_s']:,.0f} img/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
