"""Every step preset in timm's model registry: `roadmap_<step>` and `roadmap200_<step>`.

    import roadmap, timm
    model = timm.create_model("roadmap_inverted_bottleneck", num_classes=10)
    model = timm.create_model("roadmap_cmt_s")   # CMT-Ti/XS/S/B: roadmap_cmt_ti, _xs, _s, _b

The CMT presets' `roadmap200_` names build the same architectures (the regime sets only their
stochastic depth); the hybrid steps start from ConvNeXt-B there.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from timm.models import register_model

from .config import ConfigError, ModelConfig
from .config import step_names

PREFIXES = {"roadmap": "resnet50", "roadmap200": "resnet200"}
_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
# timm.create_model arguments that carry no architecture (or only their default value).
_IGNORED = {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}


def _entrypoint(name: str, step: str, regime: str) -> Callable[..., Any]:
    def create(pretrained: bool = False, **kwargs: Any):
        from .model import build_model

        if pretrained:
            raise ValueError(f"{name}: no pretrained weights are published; "
                             "use roadmap.convert.from_timm on timm's resnet50/convnext_tiny")
        overrides = {}
        for k, v in kwargs.items():
            if k in _IGNORED or v is None or (k == "drop_rate" and v == 0):
                continue
            if k not in _FIELDS:
                raise ConfigError(f"{name}: unknown argument {k!r}; allowed: {', '.join(sorted(_FIELDS))}")
            overrides[k] = v
        model = build_model(step, regime=regime, **overrides)
        size = model.cfg.img_size  # 224, or a CMT variant's native size (160/192/224/256)
        model.pretrained_cfg = model.default_cfg = {
            "architecture": name, "num_classes": model.num_classes, "input_size": (3, size, size),
            "pool_size": (size // 32, size // 32), "crop_pct": 0.875, "interpolation": "bicubic",
            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
            "first_conv": "stem.conv1" if model.cfg.stem == "cmt" else "stem.conv", "classifier": "head.fc"}
        return model

    create.__name__ = name
    create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"roadmap step `{step}` in the {regime} regime."
    return create


def register_all() -> None:
    for prefix, regime in PREFIXES.items():
        for step in step_names():
            name = f"{prefix}_{step}"
            if name not in globals():
                fn = _entrypoint(name, step, regime)
                globals()[name] = fn
                register_model(fn)


register_all()
