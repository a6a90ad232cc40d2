"""Ride-alongs (issue 20): what changes between consecutive main-path presets is derived from the
presets themselves and must match roadmap/ridealongs.yaml both ways, so the list cannot go stale;
the effective values it reports are checked against the built models' weights."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from timm.data.auto_augment import rand_augment_transform

from roadmap import ridealong
from roadmap.config import apply_scale_augment, budget_fraction, scale_randaugment, to_container
from roadmap.model import build_model
from roadmap.steps import compose_config


@pytest.fixture(scope="module")
def rows():
    return ridealong.differences()


def test_every_difference_is_documented_and_every_entry_still_matches(rows):
    undocumented = [f"{r['step']}: {r['key']} {r['from']} -> {r['to']}" for r in rows if r["kind"] == "UNDOCUMENTED"]
    assert not undocumented, "add these to roadmap/ridealongs.yaml with their source: " + "; ".join(undocumented)
    stale = ridealong.stale_entries(rows)
    assert not stale, "roadmap/ridealongs.yaml lists differences the presets no longer have: " + "; ".join(stale)
    for r in rows:
        if r["kind"] in ("part", "ride-along"):
            assert r["source"] and r["why"], r


def test_the_known_ride_alongs_are_flagged(rows):
    flagged = {(r["step"], r["key"]): (r["from"], r["to"]) for r in rows if r["kind"] == "ride-along"}
    assert flagged[("layer_norm", "effective.init")] == ("resnet", "convnext")
    assert flagged[("fewer_norms", "model.layer_scale")] == ("0.0", "1e-06")
    assert flagged[("modern_recipe", "model.zero_init_last")] == ("False", "True")
    # every step's own toggle is there, and it is the only toggle-kind row of that step
    toggles = {r["step"]: r["key"] for r in rows if r["kind"] == "toggle" and r["key"].startswith("model.")}
    assert toggles["layer_norm"] == "model.norm_type" and toggles["fewer_norms"] == "model.norms"
    # the implicit head norm of separate downsampling is shown as a built layer, with the paper as its source
    head = [r for r in rows if r["step"] == "separate_downsampling" and r["key"] == "built.head.norm"]
    assert head and head[0]["to"] == "LayerNorm" and head[0]["kind"] == "part" and "paper" in head[0]["source"]


def test_effective_init_is_what_the_weights_show():
    """Kaiming fan-out for fewer_norms (BN), truncated normal 0.02 for layer_norm (LN): the first 1x1
    layer of the first block at full width (fan-out init: std = sqrt(2 / fan_out))."""
    torch.manual_seed(0)
    bn = build_model("fewer_norms", num_classes=10).stages[0].blocks[0].conv_in.weight
    ln = build_model("layer_norm", num_classes=10).stages[0].blocks[0].conv_in.weight
    fan_out = bn.shape[0] * bn[0, 0].numel()
    assert bn.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    assert ln.std().item() == pytest.approx(0.02, rel=0.1)  # timm's trunc_normal_(std=.02) cuts at +-2, not +-2 std
    assert bn.std().item() > 3 * ln.std().item()


def test_a_report_lists_the_ride_alongs_of_its_runs():
    configs = []
    for step in ("fewer_activations", "fewer_norms", "layer_norm"):
        cfg = compose_config([f"step={step}", "scale=smoke"])
        configs.append((step, to_container(cfg)))
    lines = "\n".join(ridealong.report_lines(configs))
    assert "| `fewer_norms` | `model.layer_scale` | `0.0` → `1e-06` | **ride-along**" in lines
    assert "| `layer_norm` | `effective.init` | `resnet` → `convnext` | **ride-along**" in lines
    assert "model.norms" not in lines  # toggles are not listed as ride-alongs


def test_budget_rule_scales_every_regulariser_by_the_budget_share():
    cfg = compose_config(["step=separate_downsampling", "scale=proxy64_reg"])
    OmegaConf.resolve(cfg)
    apply_scale_augment(cfg)
    f = 5 / 300
    assert budget_fraction(5, 300) == pytest.approx(f) and budget_fraction(600, 300) == 1.0
    assert cfg.recipe.auto_augment == "rand-m9-mstd0.5-inc1-p0.008333"
    assert cfg.recipe.mixup_prob == pytest.approx(f) and cfg.recipe.reprob == pytest.approx(0.25 * f)
    assert cfg.model.drop_path_rate == pytest.approx(0.1 * f) == cfg.recipe.drop_path_rate
    assert cfg.recipe.mixup == 0.8 and cfg.recipe.cutmix == 1.0 and cfg.recipe.smoothing == 0.1  # alphas, loss kept
    assert scale_randaugment("rand-m9-mstd0.5-inc1-p0.8", 0.5) == "rand-m9-mstd0.5-inc1-p0.4"
    ra = rand_augment_transform(cfg.recipe.auto_augment, {})
    assert all(op.prob == pytest.approx(0.5 * f, abs=1e-6) for op in ra.ops)
    plain = compose_config(["step=separate_downsampling", "scale=proxy64"])
    OmegaConf.resolve(plain)
    apply_scale_augment(plain)
    assert plain.recipe.auto_augment == "rand-m9-mstd0.5-inc1" and plain.model.drop_path_rate == 0.1
