"""The parts of CMT (Guo et al., "CMT: Convolutional Neural Networks Meet Vision Transformers",
CVPR 2022) that `roadmap.model` can switch on: stem, LPU, lightweight MHSA with its relative
position bias, IRFFN and the 1280-wide conv head. All modules take and return NCHW tensors.

Facts followed from the paper and its official PyTorch code (huawei-noah/Efficient-AI-Backbones,
cmt_pytorch/cmt.py): every conv and linear has a bias; the stem and IRFFN put the activation
before the BatchNorm; the key/value reduction is a k x k depthwise conv with stride k followed by
a BatchNorm; q, k and v are separate linear layers; the scale is head_dim^-0.5; the relative
position bias B (heads, N, N/k^2) is one parameter per stage, initialised from a standard normal.
Unlike the official code (which runs only at its build size), B is resized bicubically to other
input sizes (`RelPosBias`). Differences that change no parameter count: our LayerNorms all use
eps 1e-6 (the official patch-embedding LayerNorms use 1e-5), and the weights are initialised by
`ModernizableResNet.init_weights` (trunc-normal 0.02 for LayerNorm models; the official code uses
Kaiming for convs).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Grid = Tuple[int, int]

HEAD_DIM = 1280      # CMT's head: 1x1 conv to 1280 channels
HEAD_DROPOUT = 0.1   # dropout before the classifier in the official code (all variants)


def cmt_stem(in_chans: int, channels: int) -> "OrderedDict[str, nn.Module]":
    """Three 3x3 convs (stride 2, 1, 1) to `channels`, each followed by GELU then BatchNorm: 1/2 resolution."""
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    for i in range(3):
        layers[f"conv{i + 1}"] = nn.Conv2d(in_chans if i == 0 else channels, channels, 3,
                                           stride=2 if i == 0 else 1, padding=1)
        layers[f"act{i + 1}"] = nn.GELU()
        layers[f"norm{i + 1}"] = nn.BatchNorm2d(channels)
    return layers


class LPU(nn.Module):
    """Local perception unit: x + DWConv3x3(x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class IRFFN(nn.Module):
    """Inverted residual FFN: 1x1 conv -> GELU -> BN; x + DWConv3x3(x) -> GELU -> BN; 1x1 conv -> BN."""

    def __init__(self, dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(dim, hidden, 1)
        self.act_in = nn.GELU()
        self.norm_in = nn.BatchNorm2d(hidden)
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act_dw = nn.GELU()
        self.norm_dw = nn.BatchNorm2d(hidden)
        self.conv_out = nn.Conv2d(hidden, out_dim, 1)
        self.norm_out = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(self.act_in(self.conv_in(x)))
        x = self.norm_dw(self.act_dw(x + self.conv_dw(x)))
        return self.norm_out(self.conv_out(x))


class LMHSA(nn.Module):
    """Lightweight multi-head self-attention: queries from every token, keys and values from the
    input reduced by a k x k depthwise conv with stride k (+ BatchNorm); an optional additive bias
    (heads, N, M) on the logits: softmax(q k^T * head_dim^-0.5 + B) v."""

    def __init__(self, dim: int, heads: int, reduction: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.reduce: nn.Module = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(dim, dim, reduction, stride=reduction, groups=dim),
            norm=nn.BatchNorm2d(dim),
        )) if reduction > 1 else nn.Identity()

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C / heads)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)                  # (B, N, C)
        reduced = self.reduce(x).flatten(2).transpose(1, 2)    # (B, M, C), M = N / k^2
        q, k, v = self._split(self.q(tokens)), self._split(self.k(reduced)), self._split(self.v(reduced))
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale: head_dim^-0.5
        out = self.proj(out.transpose(1, 2).flatten(2))        # (B, N, C)
        return out.transpose(1, 2).reshape(B, C, H, W)


def resize_rel_pos(table: torch.Tensor, q_grid: Grid, k_grid: Grid, new_q: Grid, new_k: Grid) -> torch.Tensor:
    """A bias (heads, Hq*Wq, Hk*Wk) resized bicubically over the query grid, then the key grid."""
    heads = table.shape[0]
    t = table.reshape(heads, q_grid[0], q_grid[1], -1).permute(0, 3, 1, 2)       # (h, Nk, Hq, Wq)
    if tuple(new_q) != tuple(q_grid):
        t = F.interpolate(t, size=new_q, mode="bicubic", align_corners=False)
    t = t.reshape(heads, k_grid[0], k_grid[1], -1).permute(0, 3, 1, 2)           # (h, nq, Hk, Wk)
    if tuple(new_k) != tuple(k_grid):
        t = F.interpolate(t, size=new_k, mode="bicubic", align_corners=False)
    return t.flatten(2)                                                           # (h, nq, nk)


class RelPosBias(nn.Module):
    """CMT's relative position bias B of one stage, `table` (heads, N, N/k^2) at the build size;
    for another input size it is resized bicubically over the query and key grids."""

    def __init__(self, heads: int, q_grid: Grid, k_grid: Grid):
        super().__init__()
        self.q_grid, self.k_grid = tuple(q_grid), tuple(k_grid)
        self.table = nn.Parameter(torch.randn(heads, q_grid[0] * q_grid[1], k_grid[0] * k_grid[1]))

    def forward(self, q_grid: Grid, k_grid: Grid) -> torch.Tensor:
        if tuple(q_grid) == self.q_grid and tuple(k_grid) == self.k_grid:
            return self.table
        return resize_rel_pos(self.table, self.q_grid, self.k_grid, q_grid, k_grid)

    def extra_repr(self) -> str:
        return f"heads={self.table.shape[0]}, q_grid={self.q_grid}, k_grid={self.k_grid}"


def conv1280_head(dim: int) -> nn.Sequential:
    """CMT's head before pooling: 1x1 conv to 1280 -> BN -> Swish."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(dim, HEAD_DIM, 1),
        norm=nn.BatchNorm2d(HEAD_DIM),
        act=nn.SiLU(),
    ))
