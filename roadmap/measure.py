"""Complexity and speed measurements shared by training, the complexity table and the benchmark."""
from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

with warnings.catch_warnings():  # fvcore's focal loss is torch.jit.script-ed at import (deprecated in torch 2.x)
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

logging.getLogger("fvcore").setLevel(logging.ERROR)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for `aten::scaled_dot_product_attention`: the multiply-adds of q k^T and of
    attn v, B * heads * N * M * (d_qk + d_v) (2 * B * heads * N * M * head_dim for CMT's LMHSA);
    the softmax and the additive bias are not counted (fvcore skips elementwise ops)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    return math.prod(batch) * n * m * (d + dv)


@torch.no_grad()
def count_gflops(model: nn.Module, img_size: int = 224, in_chans: int = 3) -> float:
    """fvcore GFLOPs (one multiply-add = one flop, as the paper counts) for one image, eval mode.

    fvcore counts convs, linears, matmuls, norms and pooling (and, with `sdpa_flop_jit`, the two
    matmuls inside scaled_dot_product_attention, which fvcore would count as 0); it ignores
    activations and adds.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(1, in_chans, img_size, img_size, device=param.device, dtype=param.dtype)
        flops = FlopCountAnalysis(model, x).set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing warnings (torch.jit deprecations) are not ours
            return flops.total() / 1e9
    finally:
        model.train(was_training)
