"""ModernizableResNet: every model on the ResNet-50 -> ConvNeXt-T roadmap as one network.

Where each roadmap toggle acts (all of them are fields of `roadmap.config.ModelConfig`):

=====================  ========================================================================
toggle                 acts in
=====================  ========================================================================
depths, width          `ModernizableResNet.__init__` (stage depths, narrow width per stage)
stem                   `make_stem`: resnet (7x7 s2 conv, norm, act, 3x3 s2 max-pool) | patchify
conv_groups            `Block`: the k x k conv is dense or depthwise
block                  `ModernizableResNet.__init__`: residual stream at the wide dim
                       (bottleneck, 4x expansion) or at the narrow dim (inverted, dim->4dim->dim)
dw_position            `Block`: the k x k conv in the middle (after the first 1x1) or first
kernel_size            `Block`: size of the k x k conv
act, activations       `Block`: ReLU | GELU; all (after every conv but the last, and after the
                       residual add) | one (only between the two 1x1 convs)
norms, norm_type       `Block`: a norm after every conv | a single norm after the k x k conv;
                       BatchNorm | channels-last LayerNorm over C
downsample             `Stage`: in the first block (strided k x k conv + projection shortcut)
                       | a separate norm + 2x2 s2 conv before the stage, plus a norm after
                       global pooling (`Head`); the stem always ends in a norm
layer_scale            `Block`: per-channel gain on the residual branch (0 = off)
drop_path_rate         `ModernizableResNet.__init__`: linear over all blocks
init, head_init_scale, `ModernizableResNet.init_weights` (zero_init_last: the last BN of a BN block's
zero_init_last         branch starts at 0, as timm's resnet50; the classic recipe turns it off)
---------------------  ---- CMT parts (roadmap/cmt.py) and the ConvNeXt -> CMT roadmap ----------
stem=cmt,              `make_stem`: three 3x3 convs (s2, s1, s1) to stem_channels, each -> GELU
stem_channels          -> BN, then a 2x2 s2 conv + norm (CMT's first patch embedding): 1/4
downsample=patch_embed `Stage`: a 2x2 s2 conv + norm before the stage (CMT's patch embedding:
                       norm after the conv; no norm after global pooling)
mlp_ratio              `ModernizableResNet.__init__`: hidden width of an inverted block's MLP
lpu                    `Block`: x + DWConv3x3(x) at the start of the block
mlp                    `Block`: mlp (1x1 -> act -> 1x1) | irffn (CMT's inverted residual FFN)
mixer (per stage),     `Block`: conv (the k x k depthwise conv inside the branch, as ConvNeXt)
heads, attn_reduction  | lmhsa (the block becomes x + LS(LMHSA(norm(x))), then x + LS(MLP(norm(x))))
rel_pos_bias, img_size `Stage`: one bias table per attention stage, built for img_size, resized
head                   `Head`: linear | conv1280 (1x1 conv to 1280 -> BN -> Swish, pool, dropout 0.1)
=====================  ========================================================================

Implementation choices that do not change the function: a conv has a bias unless a BatchNorm
follows it (so both ends match timm parameter for parameter); when the k x k conv comes first
and the norms are LayerNorms, everything after it runs channels-last with `nn.Linear`, exactly
as timm's ConvNeXt block (its `conv_mlp=False` path), so ConvNeXt pays no extra permutes.
Blocks with CMT parts (LPU, IRFFN, LMHSA) run in NCHW throughout.

CMT-Ti/XS/S/B are presets of this network (conf/step/cmt_*.yaml): stem=cmt, downsample=
patch_embed, lpu, mixer=lmhsa in every stage, mlp=irffn, rel_pos_bias, head=conv1280.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from timm.layers import DropPath, LayerNorm, LayerNorm2d, LayerScale, LayerScale2d, trunc_normal_

from .cmt import IRFFN, HEAD_DIM, HEAD_DROPOUT, LMHSA, LPU, RelPosBias, cmt_stem, conv1280_head
from .config import ConfigError, ModelConfig, effective_init, validate_model

LN_EPS = 1e-6


def make_divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def stage_widths(cfg: Any) -> List[int]:
    """Narrow width of each stage: `width * 2**i`, times `width_mult` rounded to a multiple of 8."""
    if cfg.width_mult == 1:
        return [cfg.width * 2 ** i for i in range(4)]
    return [make_divisible(cfg.width * cfg.width_mult * 2 ** i) for i in range(4)]


def norm_layer(kind: str, dim: int, channels_last: bool = False) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(dim)
    return LayerNorm(dim, eps=LN_EPS) if channels_last else LayerNorm2d(dim, eps=LN_EPS)


def act_layer(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "relu" else nn.GELU()


def scaled(cfg: Any, channels: int) -> int:
    """A channel count other than the stage widths (the CMT stem), under `width_mult`."""
    return channels if cfg.width_mult == 1 else make_divisible(channels * cfg.width_mult)


def make_stem(cfg: Any, out_dim: int) -> nn.Sequential:
    bias = cfg.norm_type != "bn"
    if cfg.stem == "resnet":
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(cfg.in_chans, out_dim, 7, stride=2, padding=3, bias=bias),
            norm=norm_layer(cfg.norm_type, out_dim),
            act=act_layer(cfg.act),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
        ))
    if cfg.stem == "patchify":
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(cfg.in_chans, out_dim, 4, stride=4, bias=bias),
            norm=norm_layer(cfg.norm_type, out_dim),
        ))
    if cfg.stem == "cmt":  # 1/2 resolution, then the first patch embedding (2x2 s2 conv + norm): 1/4
        channels = scaled(cfg, cfg.stem_channels)
        return nn.Sequential(OrderedDict(
            **cmt_stem(cfg.in_chans, channels),
            conv=nn.Conv2d(channels, out_dim, 2, stride=2),
            norm=norm_layer(cfg.norm_type, out_dim),
        ))
    raise NotImplementedError(f"model.stem={cfg.stem!r}")


def nhwc_block(cfg: Any, mixer: str = "conv") -> bool:
    """Whether a block runs channels-last inside (ConvNeXt's fast path: everything after the depthwise
    conv is pointwise): depthwise conv first, LayerNorm, the plain MLP, a conv mixer."""
    return cfg.dw_position == "first" and cfg.norm_type != "bn" and cfg.mlp != "irffn" and mixer != "lmhsa"


class Block(nn.Module):
    """Residual block: [k x k conv] -> 1x1 conv (in -> hidden) -> 1x1 conv (hidden -> out).

    `dw_position` puts the k x k conv first (as drawn above) or between the two 1x1 convs.
    Bottleneck: hidden = narrow, out = 4 * narrow. Inverted: hidden = 4 * narrow, out = narrow.
    CMT options: `lpu` adds x + DWConv3x3(x) first; `mlp=irffn` replaces the two 1x1 convs (the
    MLP) by CMT's IRFFN; `mixer=lmhsa` replaces the k x k conv by attention as its own pre-norm
    residual sublayer: x + LS(LMHSA(norm(x))), then x + LS(MLP(norm(x))) (CMT's block).
    """

    def __init__(self, cfg: Any, in_dim: int, out_dim: int, hidden: int, stride: int = 1,
                 drop_path: float = 0.0, mixer: str = "conv", heads: int = 1, reduction: int = 1):
        super().__init__()
        bn = cfg.norm_type == "bn"
        all_norms, all_acts = cfg.norms == "all", cfg.activations == "all"
        self.dw_first = cfg.dw_position == "first"
        self.irffn = cfg.mlp == "irffn"
        self.attention = mixer == "lmhsa"
        self.channels_last = nhwc_block(cfg, mixer)
        k_dim = in_dim if self.dw_first else hidden  # channels the k x k conv sees
        groups = k_dim if cfg.conv_groups == "depthwise" else 1
        identity = nn.Identity
        ls = LayerScale if self.channels_last else LayerScale2d

        def pointwise(i: int, o: int, norm_follows: bool) -> nn.Module:
            bias = not (norm_follows and bn)
            return nn.Linear(i, o, bias=bias) if self.channels_last else nn.Conv2d(i, o, 1, bias=bias)

        self.lpu = LPU(in_dim) if cfg.lpu else identity()
        if self.attention:  # token mixer: its own residual sublayer, LMHSA on the normed input
            self.norm_attn = norm_layer(cfg.norm_type, in_dim)
            self.attn = LMHSA(in_dim, heads, reduction)
            self.ls_attn = ls(in_dim, cfg.layer_scale) if cfg.layer_scale > 0 else identity()
        else:  # k x k conv: the single norm kept by `norms=one` sits after it.
            self.conv_k = nn.Conv2d(k_dim, k_dim, cfg.kernel_size, stride=stride,
                                    padding=cfg.kernel_size // 2, groups=groups, bias=not bn)
        self.norm_k = norm_layer(cfg.norm_type, k_dim, self.channels_last)  # with lmhsa: the norm before the MLP
        self.act_k = act_layer(cfg.act) if all_acts else identity()
        if self.irffn:
            self.mlp = IRFFN(in_dim, hidden, out_dim)
        else:
            # first 1x1: the activation kept by `activations=one` sits after it.
            self.conv_in = pointwise(in_dim, hidden, all_norms)
            self.norm_in = norm_layer(cfg.norm_type, hidden, self.channels_last) if all_norms else identity()
            self.act_in = act_layer(cfg.act)
            # second 1x1
            self.conv_out = pointwise(hidden, out_dim, all_norms)
            self.norm_out = norm_layer(cfg.norm_type, out_dim, self.channels_last) if all_norms else identity()
        self.ls = ls(out_dim, cfg.layer_scale) if cfg.layer_scale > 0 else identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else identity()
        self.act_out = act_layer(cfg.act) if all_acts else identity()  # after the residual add
        if cfg.downsample == "in_block" and (in_dim != out_dim or stride != 1):
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=not bn),
                norm_layer(cfg.norm_type, out_dim))
        else:
            assert in_dim == out_dim and stride == 1, "separate downsampling leaves blocks shape-preserving"
            self.shortcut = identity()

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.irffn:
            return self.mlp(x)
        x = self.act_in(self.norm_in(self.conv_in(x)))
        return self.norm_out(self.conv_out(x))

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.lpu(x)
        if self.attention:  # CMT block: x + LMHSA(LN(x)), then x + MLP(LN(x))
            x = x + self.drop_path(self.ls_attn(self.attn(self.norm_attn(x), attn_bias)))
            x = x + self.drop_path(self.ls(self._mlp(self.act_k(self.norm_k(x)))))
            return self.act_out(x)
        shortcut = self.shortcut(x)
        if self.dw_first:
            x = self.conv_k(x)
            if self.channels_last:
                x = x.permute(0, 2, 3, 1)
            x = self.ls(self._mlp(self.act_k(self.norm_k(x))))
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)
        else:
            x = self.act_in(self.norm_in(self.conv_in(x)))
            x = self.act_k(self.norm_k(self.conv_k(x)))
            x = self.ls(self.norm_out(self.conv_out(x)))
        x = self.drop_path(x)
        if self.channels_last:
            x = x + shortcut  # as timm's ConvNeXt block
        else:  # in place, as timm's ResNet bottleneck: no extra activation-sized buffer per block
            x += shortcut  # (safe: no op before it saves its output for backward)
        return self.act_out(x)


def stage_grid(img_size: int, index: int) -> int:
    """Side of stage `index`'s token grid for an `img_size` input (1/4, 1/8, 1/16, 1/32)."""
    return img_size // 2 ** (index + 2)


class Stage(nn.Module):
    def __init__(self, cfg: Any, in_dim: int, out_dim: int, hidden: int, depth: int, stride: int,
                 drop_paths: Sequence[float], index: int = 0):
        super().__init__()
        if cfg.downsample in ("separate", "patch_embed") and (in_dim != out_dim or stride > 1):
            conv = nn.Conv2d(in_dim, out_dim, stride, stride=stride)  # 2x2 s2 (1x1 if no stride)
            self.downsample: nn.Module = nn.Sequential(norm_layer(cfg.norm_type, in_dim), conv) \
                if cfg.downsample == "separate" else nn.Sequential(conv, norm_layer(cfg.norm_type, out_dim))
            in_dim, stride = out_dim, 1
        else:
            self.downsample = nn.Identity()
        mixer, heads, self.reduction = cfg.mixer[index], cfg.heads[index], cfg.attn_reduction[index]
        self.rel_pos: Optional[RelPosBias] = None
        if mixer == "lmhsa":
            if out_dim % heads:
                raise ConfigError(f"model.heads={list(cfg.heads)} does not divide stage {index + 1}'s width "
                                  f"{out_dim}; allowed: heads that divide every attention stage's width")
            side = stage_grid(cfg.img_size, index)
            if side % self.reduction:
                raise ConfigError(f"model.attn_reduction={list(cfg.attn_reduction)} does not divide stage {index + 1}'s "
                                  f"feature size {side} at model.img_size={cfg.img_size}; allowed: reductions that "
                                  f"divide each attention stage's feature size (img_size / {4 * 2 ** index} here)")
            if cfg.rel_pos_bias and side // self.reduction < 1:
                raise ConfigError(f"model.img_size={cfg.img_size} leaves stage {index + 1} no keys after "
                                  f"reduction {self.reduction}; allowed: img_size >= {4 * 2 ** index * self.reduction}")
            if cfg.rel_pos_bias:  # one bias shared by the stage's blocks
                self.rel_pos = RelPosBias(heads, (side, side), (side // self.reduction,) * 2)
        self.blocks = nn.Sequential(*[
            Block(cfg, in_dim if i == 0 else out_dim, out_dim, hidden, stride if i == 0 else 1, dp,
                  mixer, heads, self.reduction)
            for i, dp in enumerate(drop_paths)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.rel_pos is None:
            return self.blocks(x)
        h, w = x.shape[-2:]
        bias = self.rel_pos((h, w), (h // self.reduction, w // self.reduction))  # resized once per stage
        for block in self.blocks:
            x = block(x, bias)
        return x


class Head(nn.Module):
    """[conv1280: 1x1 conv -> BN -> Swish] -> global average pool -> [norm, with separate
    downsampling and the linear head] -> [dropout 0.1, conv1280] -> linear classifier."""

    def __init__(self, cfg: Any, dim: int):
        super().__init__()
        conv_head = cfg.head == "conv1280"
        self.pre: nn.Module = conv1280_head(dim) if conv_head else nn.Identity()
        self.num_features = HEAD_DIM if conv_head else dim
        if cfg.downsample == "separate" and not conv_head:
            self.norm: nn.Module = nn.BatchNorm1d(dim) if cfg.norm_type == "bn" else LayerNorm(dim, eps=LN_EPS)
        else:
            self.norm = nn.Identity()
        self.drop: nn.Module = nn.Dropout(HEAD_DROPOUT) if conv_head else nn.Identity()
        self.fc = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(F.adaptive_avg_pool2d(self.pre(x), 1).flatten(1))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


def _as_model_config(cfg: Any, overrides: Mapping[str, Any]) -> DictConfig:
    base = OmegaConf.structured(ModelConfig)
    if isinstance(cfg, DictConfig):  # a node of a full config: resolve against its root first
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if cfg is not None:
        base = OmegaConf.merge(base, cfg)
    if overrides:
        base = OmegaConf.merge(base, overrides)
    OmegaConf.resolve(base)
    return base


class ModernizableResNet(nn.Module):
    """ResNet-50 (defaults) ... ConvNeXt-T, one roadmap toggle per `ModelConfig` field."""

    def __init__(self, cfg: Optional[Any] = None, **overrides: Any):
        super().__init__()
        cfg = _as_model_config(cfg, overrides)
        validate_model(cfg)
        self.cfg = cfg
        widths = stage_widths(cfg)
        inverted = cfg.block == "inverted"
        if inverted and cfg.mlp_ratio is not None:  # CMT: hidden = int(dim * R), R = 3.6, 3.77, 4
            wide = [int(w * cfg.mlp_ratio) for w in widths]
        else:
            wide = [w * cfg.expansion for w in widths]
        dims, hiddens = (widths, wide) if inverted else (wide, widths)
        depths = list(cfg.depths)
        drop_paths = torch.linspace(0, cfg.drop_path_rate, sum(depths)).split(depths)

        self.stem = make_stem(cfg, widths[0])
        stages, in_dim = [], widths[0]
        for i in range(4):
            stages.append(Stage(cfg, in_dim, dims[i], hiddens[i], depths[i], 1 if i == 0 else 2,
                                drop_paths[i].tolist(), i))
            in_dim = dims[i]
        self.stages = nn.Sequential(*stages)
        self.num_classes = cfg.num_classes
        self.head = Head(cfg, dims[-1])
        self.num_features = self.head.num_features
        self.init_weights()

    # -- timm-style API -----------------------------------------------------------------------
    def init_weights(self) -> None:
        cfg = self.cfg
        resnet_init = effective_init(cfg) == "resnet"
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if name == "head.fc":
                    if not resnet_init:
                        trunc_normal_(m.weight, std=0.02)
                        nn.init.zeros_(m.bias)
                    m.weight.data.mul_(cfg.head_init_scale)
                    m.bias.data.mul_(cfg.head_init_scale)
                elif resnet_init:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    trunc_normal_(m.weight, std=0.02)
                if name != "head.fc" and m.bias is not None:
                    nn.init.zeros_(m.bias)
            if resnet_init and cfg.zero_init_last and isinstance(m, Block) and hasattr(getattr(m, "norm_out", None), "weight"):
                nn.init.zeros_(m.norm_out.weight)  # zero-init the branch's last norm (timm's zero_init_last)

    @property
    def nhwc_blocks(self) -> bool:
        """Whether the blocks run channels-last inside (ConvNeXt's LayerNorm + Linear path): feeding such a
        model a channels_last batch gains nothing on CPU (docs/speed.md), unlike the NCHW conv + BN blocks."""
        return any(getattr(m, "channels_last", False) for m in self.modules() if isinstance(m, Block))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(step: str = "separate_downsampling", regime: str = "resnet50",
                num_classes: int = 1000, **overrides: Any) -> ModernizableResNet:
    """Build the model of a roadmap step, e.g. ``build_model("kernel_7", kernel_size=9)``.

    `overrides` are `ModelConfig` fields applied on top of the step preset.
    """
    from .steps import model_config  # local import: steps composes Hydra configs

    return ModernizableResNet(model_config(step, regime, num_classes=num_classes, **overrides))
