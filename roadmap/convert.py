"""Map timm's ResNet / ConvNeXt state dicts into ours and back (timm's checkpoint_filter_fn idea).

    from roadmap.convert import from_timm, to_timm
    ours = from_timm(timm.create_model("convnext_tiny", pretrained=True))  # needs the network once
    back = to_timm(ours)                                                    # a timm ConvNeXt again

Our endpoints are timm's networks parameter for parameter, so the mapping is a rename (and a
reshape between our channels-last Linear layers and conv weights where layouts differ).
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from .model import ModernizableResNet, build_model

# (timm key pattern, our key pattern); applied with re.sub, first match wins.
RESNET_KEYS: List[Tuple[str, str]] = [
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.norm."),
    (r"^layer(\d)\.(\d+)\.conv1\.", r"stages.{\1}.blocks.\2.conv_in."),
    (r"^layer(\d)\.(\d+)\.bn1\.", r"stages.{\1}.blocks.\2.norm_in."),
    (r"^layer(\d)\.(\d+)\.conv2\.", r"stages.{\1}.blocks.\2.conv_k."),
    (r"^layer(\d)\.(\d+)\.bn2\.", r"stages.{\1}.blocks.\2.norm_k."),
    (r"^layer(\d)\.(\d+)\.conv3\.", r"stages.{\1}.blocks.\2.conv_out."),
    (r"^layer(\d)\.(\d+)\.bn3\.", r"stages.{\1}.blocks.\2.norm_out."),
    (r"^layer(\d)\.(\d+)\.downsample\.", r"stages.{\1}.blocks.\2.shortcut."),
    (r"^fc\.", "head.fc."),
]
CONVNEXT_KEYS: List[Tuple[str, str]] = [
    (r"^stem\.0\.", "stem.conv."),
    (r"^stem\.1\.", "stem.norm."),
    (r"^stages\.(\d)\.downsample\.", r"stages.\1.downsample."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.blocks.\2.conv_k."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.norm\.", r"stages.\1.blocks.\2.norm_k."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.blocks.\2.conv_in."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.blocks.\2.conv_out."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.gamma$", r"stages.\1.blocks.\2.ls.gamma"),
    (r"^head\.norm\.", "head.norm."),
    (r"^head\.fc\.", "head.fc."),
]


def _family(model: nn.Module) -> str:
    name = type(model).__name__
    if name == "ResNet":
        return "resnet"
    if name == "ConvNeXt":
        return "convnext"
    raise TypeError(f"from_timm supports timm ResNet and ConvNeXt models, not {name}")


def _rename(key: str, rules: List[Tuple[str, str]]) -> str:
    """timm key -> our key. `{n}` marks timm's 1-based `layerN`, which becomes `stages.{N-1}`."""
    for timm_pat, ours_pat in rules:
        m = re.match(timm_pat, key)
        if m:
            new = re.sub(r"\{(\d)\}", lambda s: str(int(s.group(1)) - 1), m.expand(ours_pat))
            return new + key[m.end():]
    raise KeyError(f"no mapping for {key!r}")


def _timm_arch(model: nn.Module) -> Tuple[str, str]:
    """(step, regime) of a timm ResNet-50/200 or ConvNeXt-T/B."""
    family = _family(model)
    if family == "resnet":
        depths = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
        regime = {(3, 4, 6, 3): "resnet50", (3, 24, 36, 3): "resnet200"}.get(tuple(depths))
        step = "baseline"
    else:
        depths = [len(s.blocks) for s in model.stages]
        dims = model.stages[0].blocks[0].conv_dw.in_channels
        regime = {((3, 3, 9, 3), 96): "resnet50", ((3, 3, 27, 3), 128): "resnet200"}.get((tuple(depths), dims))
        step = "separate_downsampling"
    if regime is None:
        raise ValueError(f"timm {type(model).__name__} with depths {depths} is not a roadmap endpoint")
    return step, regime


def _copy(src: Dict[str, torch.Tensor], dst_model: nn.Module, key_map) -> nn.Module:
    dst = dst_model.state_dict()
    new = {}
    for k, v in src.items():
        nk = key_map[k]
        new[nk] = v.reshape(dst[nk].shape)  # Linear (o, i) <-> 1x1 conv (o, i, 1, 1)
    missing = set(dst) - set(new)
    if missing:
        raise KeyError(f"unmapped keys: {sorted(missing)[:5]}")
    dst_model.load_state_dict(new, strict=True)
    return dst_model


def from_timm(timm_model: nn.Module) -> ModernizableResNet:
    """Our model with the weights of a timm resnet50/resnet200/convnext_tiny/convnext_base."""
    step, regime = _timm_arch(timm_model)
    rules = RESNET_KEYS if _family(timm_model) == "resnet" else CONVNEXT_KEYS
    ours = build_model(step, regime=regime, num_classes=timm_model.num_classes)
    sd = timm_model.state_dict()
    return _copy(sd, ours, {k: _rename(k, rules) for k in sd})


def to_timm(model: ModernizableResNet) -> nn.Module:
    """The timm model equal to one of our endpoints (baseline or separate_downsampling)."""
    import timm

    cfg = model.cfg
    depths = tuple(cfg.depths)
    names = {((3, 4, 6, 3), "bottleneck"): "resnet50", ((3, 24, 36, 3), "bottleneck"): "resnet200",
             ((3, 3, 9, 3), "inverted"): "convnext_tiny", ((3, 3, 27, 3), "inverted"): "convnext_base"}
    name = names.get((depths, cfg.block))
    if name is None:
        raise ValueError("to_timm converts the roadmap's endpoints only (baseline, separate_downsampling)")
    timm_model = timm.create_model(name, num_classes=cfg.num_classes)
    rules = RESNET_KEYS if name.startswith("resnet") else CONVNEXT_KEYS
    tsd = timm_model.state_dict()
    ours_to_timm = {_rename(k, rules): k for k in tsd}
    return _copy(model.state_dict(), timm_model, ours_to_timm)
