"""The GPU code paths, on CPU where PyTorch allows: bf16 autocast, channels_last and torch.compile
each train real updates of a real model on real Imagenette images through `roadmap.train.run` and
match the fp32 / NCHW / eager run within a stated tolerance. (No GPU in CI: what differs on CUDA is
the kernels, not this code.)"""
import math

import pytest
import torch

from roadmap.train import run


def _run(tmp_path, imagenette, name, *extra):
    from omegaconf import OmegaConf

    from roadmap.steps import compose_config

    cfg = compose_config(["step=separate_downsampling", "recipe=modern", "scale=smoke", "logger=none",
                          f"data.root={imagenette}", f"data.cache_dir={tmp_path / 'cache'}", "scale.workers=0",
                          "scale.max_train_samples=24", "scale.max_val_samples=16", "scale.batch_size=8",
                          "scale.img_size=32", "scale.width_mult=0.25", "scale.epochs=2",
                          "recipe.drop_path_rate=0",  # compiled graphs draw their own random numbers
                          "scale.device=cpu", *extra])
    OmegaConf.resolve(cfg)
    m = run(cfg, tmp_path / name)
    return [m["train_loss"], m["val_loss"]], m


def _rel(a, b):
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, imagenette):
    tmp = tmp_path_factory.mktemp("gpu_paths")
    losses, m = _run(tmp, imagenette, "fp32", "scale.amp=none", "scale.channels_last=off")
    assert m["amp"] == "fp32" and not m["channels_last"] and all(map(math.isfinite, losses))
    return tmp, losses


def test_channels_last_matches_nchw(reference, imagenette):
    # same arithmetic, other memory layout: only the convolutions' summation order differs
    # (fp32 rounding, ~1e-7 relative per op); 6 AdamW updates keep that far under 1e-4.
    tmp, ref = reference
    losses, m = _run(tmp, imagenette, "cl", "scale.amp=none", "scale.channels_last=on")
    assert m["channels_last"] and _rel(losses, ref) < 1e-4, (losses, ref)


def test_bf16_autocast_matches_fp32(reference, imagenette):
    # bf16 keeps 8 significant bits (rounding 2^-9 ~ 2e-3 relative per op); through ~20 layers of
    # roughly independent roundings that is ~1e-2 on the logits, so the losses agree within 3e-2 --
    # and must differ at all, or autocast did nothing.
    tmp, ref = reference
    losses, m = _run(tmp, imagenette, "bf16", "scale.amp=bf16", "scale.channels_last=on")
    assert m["amp"] == "bfloat16"
    assert 1e-6 < _rel(losses, ref) < 3e-2, (losses, ref)


def test_compile_graph_capture_matches_eager(imagenette):
    """torch.compile's front end (Dynamo, full graph, AOTAutograd) on both ends of the roadmap,
    with eager kernels (backend aot_eager): training updates match eager within 1e-4 (the traced
    graph runs decomposed ops; fp32 rounding only). Inductor itself: the slow test below."""
    from pathlib import Path

    import numpy as np

    from roadmap.data import _decode_resized, scan_folder
    from roadmap.model import build_model

    _, samples = scan_folder(Path(imagenette) / "train")
    x = torch.from_numpy(np.stack([_decode_resized((samples[i][0], 32, "bicubic")) for i in range(0, 800, 100)]))
    x = (x.permute(0, 3, 1, 2).float() / 255 - 0.45) / 0.225
    y = torch.arange(8) % 10
    for step in ("baseline", "separate_downsampling"):
        losses = []
        for compiled in (False, True):
            torch.manual_seed(0)
            model = build_model(step, num_classes=10, width_mult=0.25)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            fwd = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
            out = []
            for _ in range(3):
                loss = torch.nn.functional.cross_entropy(fwd(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                out.append(loss.item())
            losses.append(out)
        torch._dynamo.reset()
        assert _rel(losses[1], losses[0]) < 1e-4, (step, losses)


@pytest.mark.slow  # inductor compiles C++ kernels: 45-90 s for one model on 2 cores
def test_inductor_compile_matches_eager(reference, imagenette):
    # inductor fuses kernels and reorders reductions (fp32): within 1e-3 after 6 updates
    tmp, ref = reference
    losses, m = _run(tmp, imagenette, "compiled", "scale.amp=none", "scale.channels_last=off", "scale.compile=true")
    assert m["compile"] and _rel(losses, ref) < 1e-3, (losses, ref)
