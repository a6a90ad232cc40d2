"""Complexity and speed measurements shared by training, the complexity table and the benchmark."""
from __future__ import annotations

import logging
import statistics
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

logging.getLogger("fvcore").setLevel(logging.ERROR)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, img_size: int = 224, in_chans: int = 3) -> float:
    """fvcore GFLOPs (one multiply-add = one flop, as the paper counts) for one image, eval mode.

    fvcore counts convs, linears, matmuls, norms and pooling; it ignores activations and adds.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(1, in_chans, img_size, img_size, device=param.device, dtype=param.dtype)
        flops = FlopCountAnalysis(model, x)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing warnings (torch.jit deprecations) are not ours
            return flops.total() / 1e9
    finally:
        model.train(was_training)
