"""CMT as options of the one model: variants vs the official code, LMHSA and its relative position
bias (resizing, sharing, exact maths), attention FLOPs, the ConvNeXt -> CMT roadmap, entry points."""
import math
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F

import roadmap  # noqa: F401  (timm registry)
from roadmap import ModernizableResNet, build_model
from roadmap.cmt import LMHSA, RelPosBias
from roadmap.config import ConfigError
from roadmap.measure import count_gflops, count_params
from roadmap.report import delta_reference
from roadmap.config import reference, step_names
from roadmap.steps import compose_config, step_info
from roadmap.train import run

CMT = reference()["cmt"]
VARIANTS = CMT["variants"]
HYBRID = [CMT["steps"][0]["parent"]] + [s["name"] for s in CMT["steps"]]
SMALL = dict(width_mult=0.25, num_classes=10)  # quarter width: fast, every toggle as at full width


@pytest.fixture(scope="module")
def cmt_s():
    return build_model("cmt_s").eval()


@pytest.mark.parametrize("step", list(VARIANTS))
def test_variant_params_match_official_code(step):
    model = build_model(step)
    official = VARIANTS[step]["official_params_m"] * 1e6
    assert abs(count_params(model) / official - 1) < 0.005, (step, count_params(model))
    assert model.cfg.img_size == VARIANTS[step]["img_size"]


def test_exact_param_counts_and_structure(cmt_s):
    want = {"cmt_ti": 9_492_426, "cmt_xs": 15_247_208, "cmt_s": 26_256_160, "cmt_b": 45_715_076}
    assert count_params(cmt_s) == want["cmt_s"]
    assert count_params(build_model("cmt_ti")) == want["cmt_ti"]
    tables = {n: p.shape for n, p in cmt_s.named_parameters() if n.endswith("rel_pos.table")}
    assert tables == {"stages.0.rel_pos.table": (1, 3136, 49), "stages.1.rel_pos.table": (2, 784, 49),
                      "stages.2.rel_pos.table": (4, 196, 49), "stages.3.rel_pos.table": (8, 49, 49)}
    blk = cmt_s.stages[2].blocks[0]
    assert blk.attention and blk.irffn and blk.attn.heads == 4
    assert blk.attn.reduce.conv.kernel_size == (2, 2) and blk.attn.reduce.conv.groups == 256
    assert blk.mlp.conv_in.out_channels == 1024 and blk.lpu.conv.groups == 256
    assert isinstance(cmt_s.stages[3].blocks[0].attn.reduce, torch.nn.Identity)  # k = 1
    assert cmt_s.num_features == 1280 and cmt_s.head.fc.in_features == 1280
    assert build_model("cmt_ti").stages[0].blocks[0].mlp.conv_in.out_channels == 165  # int(46 * 3.6)


@pytest.mark.parametrize("step", list(VARIANTS))
def test_forward_shapes_at_native_and_proxy_size(step):
    model = build_model(step, **SMALL).eval()
    with torch.no_grad():
        for size in (VARIANTS[step]["img_size"], 64):
            feats = model.forward_features(torch.randn(1, 3, size, size))
            assert feats.shape[-1] == size // 32
            assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_rel_pos_bias_resizes_to_any_input_size():
    model = build_model("cmt_s", **SMALL)  # bias built for 224
    stage = model.stages[0]
    table = stage.rel_pos.table
    assert stage.rel_pos((56, 56), (7, 7)) is table  # at the build size: the table itself
    assert stage.rel_pos((16, 16), (2, 2)).shape == (1, 256, 4)  # 64 px input
    assert stage.rel_pos((40, 40), (5, 5)).shape == (1, 1600, 25)  # 160 px input
    for size in (64, 160):
        model.zero_grad(set_to_none=True)
        model.train()
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        for s in model.stages:
            assert s.rel_pos.table.grad is not None and s.rel_pos.table.grad.abs().sum() > 0


def test_rel_pos_resize_is_bicubic_over_query_then_key_grid():
    torch.manual_seed(0)
    bias = RelPosBias(2, (8, 8), (4, 4))
    t = bias.table.detach()
    got = bias((4, 6), (2, 3)).detach()
    want = t.reshape(2, 8, 8, 16).permute(0, 3, 1, 2)
    want = F.interpolate(want, size=(4, 6), mode="bicubic", align_corners=False)  # (2, 16, 4, 6)
    want = want.reshape(2, 4, 4, 24).permute(0, 3, 1, 2)
    want = F.interpolate(want, size=(2, 3), mode="bicubic", align_corners=False).reshape(2, 24, 6)
    assert got.shape == (2, 24, 6) and torch.allclose(got, want)


def test_rel_pos_bias_is_shared_within_a_stage():
    model = build_model("hybrid_rel_pos", **SMALL)
    names = [n for n, _ in model.named_parameters() if "rel_pos" in n]
    assert names == [f"stages.{i}.rel_pos.table" for i in range(4)]
    seen = []
    hooks = [b.attn.register_forward_hook(lambda m, args, out: seen.append(args[1]))
             for s in model.stages[:1] for b in s.blocks]
    model.eval()(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert len(seen) == 3 and all(b is seen[0] for b in seen)  # one resized bias for all blocks


def test_lmhsa_equals_naive_attention():
    torch.manual_seed(0)
    dim, heads, k, H, W = 32, 4, 2, 8, 6
    attn = LMHSA(dim, heads, k).eval()
    for p in attn.reduce.norm.parameters():
        p.data.uniform_(0.5, 1.5)
    attn.reduce.norm.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(2, dim, H, W)
    bias = torch.randn(heads, H * W, (H // k) * (W // k))
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2)
        reduced = attn.reduce(x).flatten(2).transpose(1, 2)
        d = dim // heads
        q = attn.q(tokens).reshape(2, -1, heads, d).transpose(1, 2)
        kk = attn.k(reduced).reshape(2, -1, heads, d).transpose(1, 2)
        v = attn.v(reduced).reshape(2, -1, heads, d).transpose(1, 2)
        a = (q @ kk.transpose(-2, -1) * d ** -0.5 + bias).softmax(-1)
        want = attn.proj((a @ v).transpose(1, 2).reshape(2, H * W, dim)).transpose(1, 2).reshape(2, dim, H, W)
        assert torch.allclose(attn(x, bias), want, atol=1e-5)
        a0 = (q @ kk.transpose(-2, -1) * d ** -0.5).softmax(-1)
        want0 = attn.proj((a0 @ v).transpose(1, 2).reshape(2, H * W, dim)).transpose(1, 2).reshape(2, dim, H, W)
        assert torch.allclose(attn(x), want0, atol=1e-5)


def test_attention_flops_are_counted(cmt_s):
    from fvcore.nn import FlopCountAnalysis

    g = count_gflops(cmt_s, 224)
    assert g == pytest.approx(4.087, abs=0.002)
    # q k^T and attn v: 2 * blocks * N * M * C per stage (heads * head_dim = C)
    grids, widths, depths = [56, 28, 14, 7], [64, 128, 256, 512], [3, 3, 16, 3]
    manual = sum(2 * d * (n * n) * (n // k) ** 2 * c for n, c, d, k in zip(grids, widths, depths, [8, 4, 2, 1]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        flops = FlopCountAnalysis(cmt_s, torch.zeros(1, 3, 224, 224))
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        without = flops.total() / 1e9  # fvcore alone: attention counted as 0
    assert g - without == pytest.approx(manual / 1e9, rel=1e-6) and manual / 1e9 == pytest.approx(0.1746, abs=1e-4)
    torchprofile = pytest.importorskip("torchprofile")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs = torchprofile.profile_macs(cmt_s, torch.zeros(1, 3, 224, 224)) / 1e9
    assert macs == pytest.approx(g, rel=0.03)  # the rest of the gap: fvcore counts a LayerNorm as 5/elem


def test_hybrid_steps_change_one_thing_each():
    expected = {
        "hybrid_cmt_stem": {"stem"}, "hybrid_lpu": {"lpu"}, "hybrid_irffn": {"mlp"},
        "hybrid_attn_s34": {"mixer"}, "hybrid_attn_all": {"mixer"}, "hybrid_rel_pos": {"rel_pos_bias"},
        "hybrid_cmt_s": {"depths", "width", "downsample", "layer_scale", "head"},  # CMT-S macro design
    }
    cfgs = {s: build_model(s).cfg for s in HYBRID}
    for prev, step in zip(HYBRID, HYBRID[1:]):
        diff = {k for k in cfgs[step] if cfgs[step][k] != cfgs[prev][k]}
        assert diff == expected[step], (step, diff)
    assert list(cfgs["hybrid_attn_s34"].mixer) == ["conv", "conv", "lmhsa", "lmhsa"]
    assert cfgs["hybrid_cmt_s"] == build_model("cmt_s").cfg  # the roadmap ends at CMT-S exactly
    assert [step_info(s)["index"] for s in HYBRID[1:]] == list(range(100, 107))
    assert delta_reference("hybrid_cmt_stem") == "separate_downsampling"
    assert delta_reference("hybrid_cmt_s") == "hybrid_rel_pos"


def test_hybrid_attn_s34_attends_only_in_stages_3_and_4():
    model = build_model("hybrid_attn_s34", **SMALL)
    kinds = [[b.attention for b in s.blocks] for s in model.stages]
    assert [set(k) for k in kinds] == [{False}, {False}, {True}, {True}]
    assert all(s.rel_pos is None for s in model.stages)
    assert model.stages[0].blocks[0].conv_k.kernel_size == (7, 7) and model.stages[0].blocks[0].irffn


def test_hybrid_complexity_rows():
    want = {"separate_downsampling": (28.59, 4.470), "hybrid_cmt_stem": (28.62, 4.739),
            "hybrid_attn_s34": (41.23, 5.915), "hybrid_rel_pos": (42.06, 6.350)}
    for step, (params_m, gflops) in want.items():
        model = build_model(step)
        assert round(count_params(model) / 1e6, 2) == params_m
        assert count_gflops(model, 224) == pytest.approx(gflops, abs=0.002)


def test_entry_points_build_cmt():
    assert count_params(build_model("cmt_s")) == 26_256_160
    names = set(timm.list_models("roadmap_cmt*"))
    assert {"roadmap_cmt_ti", "roadmap_cmt_xs", "roadmap_cmt_s", "roadmap_cmt_b"} <= names
    m = timm.create_model("roadmap_cmt_ti", num_classes=7)
    assert isinstance(m, ModernizableResNet) and m.num_classes == 7
    assert timm.data.resolve_data_config({}, model=m)["input_size"] == (3, 160, 160)
    assert {"cmt_s", "hybrid_cmt_s"} <= set(step_names())


@pytest.mark.parametrize("overrides,key,allowed", [
    (dict(mixer=["conv", "attention", "conv", "conv"]), "model.mixer", "conv, lmhsa"),
    (dict(mixer=["lmhsa"] * 3), "model.mixer", "conv, lmhsa"),
    (dict(mlp="ffn"), "model.mlp", "mlp, irffn"),
    (dict(head="conv"), "model.head", "linear, conv1280"),
    (dict(stem="vit"), "model.stem", "resnet, patchify, cmt"),
    (dict(downsample="pool"), "model.downsample", "in_block, separate, patch_embed"),
    (dict(heads=[1, 2, 4]), "model.heads", "4 integers"),
    (dict(attn_reduction=[8, 4, 2, 0]), "model.attn_reduction", "4 integers >= 1"),
    (dict(heads=[3, 2, 4, 8]), "model.heads", "divide"),
    (dict(attn_reduction=[3, 4, 2, 1]), "model.attn_reduction", "divide"),  # 56 px grid, k = 3
    (dict(img_size=200), "model.attn_reduction", "divide"),  # stage 1 grid 50, k = 8
    (dict(mlp_ratio=0.0), "model.mlp_ratio", "(0"),
])
def test_invalid_cmt_options_fail_with_one_clear_line(overrides, key, allowed):
    with pytest.raises(ConfigError) as e:
        build_model("cmt_s", **overrides)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and "allowed" in msg and allowed in msg, msg


def test_cmt_parts_need_an_inverted_dw_first_block():
    for key, value in (("mlp", "irffn"), ("mixer", ["conv", "conv", "lmhsa", "lmhsa"])):
        with pytest.raises(ConfigError, match=f"model.{key}=.*allowed only with block=inverted"):
            build_model("baseline", **{key: value})


@pytest.mark.parametrize("step", ["cmt_s", "hybrid_attn_all"])
def test_hydra_composed_step_trains_on_synthetic_data(step, tmp_path):
    cfg = compose_config([f"step={step}", "scale=smoke", "data=synthetic", "data.synthetic_size=64",
                          "scale.batch_size=16", "scale.max_val_samples=16", "scale.workers=0", "logger=none"])
    assert cfg.recipe.name == "modern" and cfg.model.width_mult == 0.25 and cfg.scale.img_size == 64
    metrics = run(cfg, tmp_path / "run")
    assert metrics["epochs_done"] == 2 and math.isfinite(metrics["train_loss"])
    assert metrics["gflops_224"] == pytest.approx({"cmt_s": 4.087, "hybrid_attn_all": 6.350}[step], abs=0.002)
