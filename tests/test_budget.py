"""The budget study's analysis (roadmap.report.budget): contrasts paired by seed, the changes between
presets with the pre-registered verdicts, the figure, the table -- on copies of the committed proxy64
runs, one copy with a known shift."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from roadmap.report import budget

REPO = Path(__file__).resolve().parent.parent
PROXY64 = REPO / "results" / "imagenette-proxy64" / "runs"


def _copy(dst: Path, seeds, shift=None):
    for step in budget.SIX:
        for k in seeds:
            d = dst / step / f"seed{k}"
            shutil.copytree(PROXY64 / step / f"seed{k}", d)
            if shift and step in shift:
                m = json.loads((d / "metrics.json").read_text())
                for key in ("top1", "top1_last"):
                    if key in m:
                        m[key] += shift[step]
                (d / "metrics.json").write_text(json.dumps(m))


def _paired(results, preset, a, b):
    ta = [json.loads((results / f"imagenette-{preset}" / "runs" / a / s / "metrics.json").read_text())["top1"]
          for s in sorted(p.name for p in (results / f"imagenette-{preset}" / "runs" / a).iterdir())]
    tb = [json.loads((results / f"imagenette-{preset}" / "runs" / b / s / "metrics.json").read_text())["top1"]
          for s in sorted(p.name for p in (results / f"imagenette-{preset}" / "runs" / b).iterdir())]
    d = np.array(tb) - np.array(ta)
    return d.mean(), d.std(ddof=1) / math.sqrt(len(d))


def test_budget_contrasts_changes_and_verdicts(tmp_path):
    results = tmp_path / "results"
    _copy(results / "imagenette-proxy64" / "runs", (0, 1, 2))
    _copy(results / "imagenette-proxy64_e20" / "runs", (0, 1), shift={"separate_downsampling": 20.0})
    out = budget.build(results, wandb_mode="offline")
    result = json.loads((out / "budget.json").read_text())
    d5, se5 = _paired(results, "proxy64", "modern_recipe", "separate_downsampling")
    d20, se20 = _paired(results, "proxy64_e20", "modern_recipe", "separate_downsampling")
    assert abs(result["contrasts"]["proxy64"]["arch"]["delta"] - d5) < 1e-9
    assert abs(d5 - (-13.67)) < 0.01 and abs(se5 - 0.77) < 0.01  # the committed study's figure
    h1 = result["hypotheses"]["H1"]
    assert abs(h1["D"] - (d20 - d5)) < 1e-9 and abs(h1["se"] - math.hypot(se5, se20)) < 1e-9
    assert h1["verdict"].startswith("supported") and "provisional" in h1["verdict"]
    assert result["hypotheses"]["H2"]["verdict"].startswith(("refuted", "undecided"))  # LN pair not shifted
    assert result["hypotheses"]["H7"]["verdict"] == "not run"
    assert (out / "budget.png").stat().st_size > 10_000 and (out / "budget.svg").is_file()
    md = (out / "verdicts.md").read_text()
    assert "| `proxy64_e20` |" in md and "not run" in md and "(2)" in md
    walls = [json.loads(f.read_text())["wall_seconds"] for f in (results / "imagenette-proxy64_e20").rglob("metrics.json")]
    assert result["cost"]["runs"] == 12 and result["cost"]["studies"].keys() == {"imagenette-proxy64_e20"}  # not proxy64
    assert abs(result["cost"]["cap_used_min"] - sum(walls) / 2 / 60) < 1e-9
    assert f"**{sum(walls) / 120:.0f} of the 600 min cap used**" in md
    # the study page's block: filled from the same result, twice gives the same page, prose kept
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(f"# Study\n\nprose before\n\n{budget.BEGIN}\nstale\n{budget.END}\n\nprose after\n")
    assert budget.main([str(results), "--page", str(page)]) == 0
    once, svg = page.read_text(), (out / "budget.svg").read_bytes()
    assert budget.main([str(results), "--page", str(page)]) == 0
    assert (out / "budget.svg").read_bytes() == svg  # no random ids, no date: a rebuild is byte-identical
    assert page.read_text() == once and "stale" not in once and once.startswith("# Study\n\nprose before\n\n")
    assert once.endswith(f"{budget.END}\n\nprose after\n") and "![budget figure](../results/proxy64-budgets/budget.png)" in once
    h1 = f"| H1 | Δ_arch(20 ep) − Δ_arch(5 ep) | {h1['D']:+.2f} ± {h1['se']:.2f} | supported — provisional (2 seeds) |"
    assert h1 in once and "| `proxy64_e20` |" in once
    page.write_text("no block here\n")
    before = (out / "verdicts.md").stat().st_mtime_ns
    assert budget.main([str(results), "--page", str(page)]) == 2  # refused before anything is written
    assert (out / "verdicts.md").stat().st_mtime_ns == before
    [run] = list((out / "wandb").glob("offline-run-*-report-proxy64-budgets"))  # the W&B report run, offline
    assert list(run.glob("*.wandb")) and list(run.rglob("budget/figure*.png"))


def test_verdict_rule():
    assert budget.verdict(3.0, 1.0, 1, 3) == "supported"
    assert budget.verdict(-3.0, 1.0, 1, 3) == "refuted (moves the other way)"
    assert budget.verdict(0.3, 0.4, 1, 3) == "refuted (no change)"
    assert budget.verdict(1.5, 1.0, 1, 3) == "undecided at this budget"
    assert budget.verdict(3.0, 1.0, 1, 2).endswith("provisional (2 seeds)")


def test_the_figure_s_presets_agree_with_the_scale_configs():
    """budget.PRESETS restates where each preset sits in the figure: the epochs and the rule must be
    the scale configs' own (conf/scale/proxy64_*.yaml), so the figure cannot drift from the runs."""
    from roadmap.steps import compose_config

    base = compose_config(["step=gelu", "scale=proxy64"]).scale
    for preset, (panel, x, label) in budget.PRESETS.items():
        scale = compose_config(["step=gelu", f"scale={preset}"]).scale
        assert scale.name == preset
        if panel in ("recipe", "budget"):  # x is the epochs; only epochs and the rule differ from proxy64
            assert scale.epochs == x and f"{x} epochs" == label, preset
            assert scale.regularization == ("budget" if panel == "budget" else "recipe"), preset
            assert (scale.img_size, scale.width_mult, scale.max_train_samples) == (64, base.width_mult, None), preset
        else:  # one other reduction each, at proxy64's 5 epochs or ~1,480 updates
            changed = {k for k in ("img_size", "width_mult", "max_train_samples") if scale[k] != base[k]}
            assert len(changed) == 1 and scale.regularization == "recipe", preset
            if "max_train_samples" in changed:
                share = round(100 * scale.max_train_samples / 9469)
                assert f"data {share} %" in label and scale.epochs * scale.max_train_samples // 64 in range(1470, 1490), preset
            else:
                assert scale.epochs == 5 and "5 ep" in label, preset


def test_budget_ridealong_rows(tmp_path):
    """H5: each pre-registered ride-along variant is paired by seed with its step's proxy64 runs; a
    variant not run yet still has its row."""
    results = tmp_path / "results"
    _copy(results / "imagenette-proxy64" / "runs", (0, 1, 2))
    variant = results / "imagenette-proxy64-ridealong" / "runs" / "layer_norm"
    for k, shift in ((0, 5.0), (1, 6.0)):  # variant - preset = +5, +6: mean +5.5, SE 0.5
        d = variant / f"seed{k},model.init=resnet"
        shutil.copytree(PROXY64 / "layer_norm" / f"seed{k}", d)
        m = json.loads((d / "metrics.json").read_text())
        m["top1"] += shift
        (d / "metrics.json").write_text(json.dumps(m))
    hyp = budget.analyse(budget.load(results))["hypotheses"]
    h5 = hyp["H5 layer_norm,model.init=resnet"]
    assert abs(h5["D"] - 5.5) < 1e-9 and abs(h5["se"] - 0.5) < 1e-9
    assert h5["verdict"] == "moves the step's Δ beyond 2 SE — provisional (2 seeds)"
    assert hyp["H5 fewer_norms,model.init=convnext"]["verdict"] == "not run"
    assert hyp["H5 fewer_norms,model.layer_scale=0"]["verdict"] == "not run"
