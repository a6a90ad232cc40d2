"""timm train.py runs into our report (issue 33): the converter, the importer, the peer-check rule.

* `roadmap.timm_data` writes the prepared cache's images (a smoke subset of real Imagenette, in tmp_path)
  as PNG class folders: the pixels read back are the cache's, and our own loader on that folder builds
  the very same cache again (so train.py and our loop see the same images); a second call finds it;
* `roadmap.timm_import` turns train.py's args.yaml and summary.csv (written here as train.py writes them,
  from the printed command; a resumed run's repeated header and epoch included) into a run directory
  the report reads; another config or an unfinished run is refused in one line;
* `roadmap.report.peer` applies the declared rule to copies of the committed proxy64 runs of the two
  ends against peers with known top-1, the intervals computed here by hand;
* (slow, only with $TIMM_TRAIN) the whole path through timm's real train.py, 2 epochs at scale=smoke.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from roadmap.config import ConfigError
from roadmap.files import read_csv, read_json, write_json
from roadmap.report import peer
from roadmap.report.collect import read_run
from roadmap.timm_command import Target, build, parse_command, render, resolve_config
from roadmap.timm_data import export
from roadmap.timm_import import import_run

REPO = Path(__file__).resolve().parent.parent
PROXY64 = REPO / "results" / "imagenette-proxy64" / "runs"


def test_cache_as_png_folder_gives_back_the_same_pixels(tmp_path, imagenette, monkeypatch):
    from roadmap.data import base_datasets
    from roadmap.steps import compose_config

    monkeypatch.setenv("ROADMAP_CACHE", str(tmp_path / "cache"))
    cfg = resolve_config(["step=modern_recipe", "scale=smoke", f"data.root={imagenette}"])
    out = tmp_path / "png"
    record = export(cfg, out, log=lambda *_: None)
    train, val, _ = base_datasets(cfg, log_fn=lambda *_: None)
    assert (record["train_images"], record["val_images"], record["size"]) == (320, 200, 73)
    for split, ds in (("train", train), ("val", val)):
        files = sorted((out / split).rglob("*.png"))
        assert len(files) == len(ds)
        for i in (0, len(ds) // 2, len(ds) - 1):
            f = out / split / ds.classes[int(ds.labels[i])] / f"{i:06d}.png"
            assert np.array_equal(np.asarray(Image.open(f)), np.asarray(ds.images[i]))
    again = export(cfg, out, log=lambda *_: None)
    assert again["train_cache"] == record["train_cache"] and not (out.parent / f".{out.name}.partial").exists()
    ours = compose_config(["step=modern_recipe", "scale=smoke", "data=imagefolder", f"data.root={out}"])
    ours.data.num_classes = 10
    train2, val2, _ = base_datasets(ours, log_fn=lambda *_: None)  # our loader on the PNG folder
    assert np.array_equal(np.asarray(train2.images), np.asarray(train.images))
    assert np.array_equal(np.asarray(val2.images), np.asarray(val.images)) and train2.classes == train.classes
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="holds other images"):
        export(cfg, tmp_path / "other", log=lambda *_: None)


def fake_timm_run(folder: Path, cfg, epochs_rows, change=None) -> Path:
    """train.py's output folder as train.py writes it: args.yaml (every dest) and summary.csv."""
    args = parse_command(render(build(cfg, Target(device="cpu"))))
    args.update(change or {})
    folder.mkdir(parents=True)
    (folder / "args.yaml").write_text(yaml.safe_dump(args))
    header = "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr"
    lines = [header]
    for row in epochs_rows:
        lines += [header] if row == "header" else [",".join(str(v) for v in row)]
    (folder / "summary.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_import_a_train_py_run(tmp_path):
    cfg = resolve_config(["step=modern_recipe", "scale=smoke", "seed=1"])
    rows = [(0, 2.3, 2.2, 11.0, 50.0, 1e-4), "header", (0, 2.31, 2.21, 12.0, 51.0, 1e-4), (1, 2.2, 2.1, 20.5, 60.0, 1e-6)]
    timm_dir = fake_timm_run(tmp_path / "timm" / "run", cfg, rows)
    run_dir = tmp_path / "study" / "runs" / "modern_recipe" / "seed1"
    m = import_run(timm_dir, run_dir, cfg, Target(device="cpu"))
    assert (m["top1"], m["top1_best"], m["best_epoch"], m["epochs_done"]) == (20.5, 20.5, 2, 2)
    assert m["params"] == 1486106 and m["lr"] == pytest.approx(4e-3 * 32 / 4096)  # the committed runs' network
    hist = read_csv(run_dir / "history.csv")
    assert [(h["epoch"], h["top1"]) for h in hist] == [("1", "12.0"), ("2", "20.5")]  # the resumed epoch 0 wins
    rec = read_run(run_dir)
    assert rec["status"] == "finished" and rec["curves"]["top1"] == [(1, 12.0), (2, 20.5)] and rec["seed"] == 1
    assert read_json(run_dir / "metrics.json")["loop"]["model"] == "roadmap_modern_recipe"
    assert (run_dir / "timm" / "summary.csv").read_text() == (timm_dir / "summary.csv").read_text()

    other = fake_timm_run(tmp_path / "timm" / "lr", cfg, rows, change={"lr": 0.1})
    with pytest.raises(ConfigError, match=r"args.yaml has lr=0.1 where step=modern_recipe"):
        import_run(other, tmp_path / "x", cfg, Target(device="cpu"))
    short = fake_timm_run(tmp_path / "timm" / "short", cfg, rows[:1])
    with pytest.raises(ConfigError, match="ends at epoch 1 of 2: the run is unfinished"):
        import_run(short, tmp_path / "y", cfg, Target(device="cpu"))


def peer_study(root: Path, top1) -> Path:
    """A study holding copies of the committed seed-0/1 runs of both ends with their top-1 replaced."""
    for step, values in top1.items():
        for seed, v in enumerate(values):
            dst = root / "runs" / step / f"seed{seed}"
            shutil.copytree(PROXY64 / step / f"seed{seed}", dst)
            m = read_json(dst / "metrics.json")
            m.update(top1=v, top1_last=v)
            write_json(dst / "metrics.json", m)
    return root


def test_peer_rule_against_the_committed_runs(tmp_path, capsys):
    from scipy.stats import t

    ours = {s: [read_json(PROXY64 / s / f"seed{k}" / "metrics.json")["top1"] for k in range(3)] for s in peer.ENDS}
    study = tmp_path / "ours"  # the committed runs of the two ends, as they are
    for s in peer.ENDS:
        shutil.copytree(PROXY64 / s, study / "runs" / s)
    near = peer_study(tmp_path / "near", {"modern_recipe": [48.3, 48.5], "separate_downsampling": [35.0, 34.5]})
    res = peer.check(study, near)
    for step, xs in ours.items():
        mu, sd = sum(xs) / 3, math.sqrt(sum((x - sum(xs) / 3) ** 2 for x in xs) / 2)
        half = t.ppf(1 - 0.025 / 2, 2) * sd * math.sqrt(1 / 3 + 1 / 2)
        assert res["models"][step]["low"] == pytest.approx(mu - half) and res["models"][step]["inside"]
    d = [b - a for a, b in zip(ours["modern_recipe"], ours["separate_downsampling"])]
    mu_d, sd_d = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    g = res["gain"]
    assert g["ours"] == pytest.approx(-13.673, abs=1e-3) and g["peer"] == pytest.approx(((35.0 - 48.3) + (34.5 - 48.5)) / 2)
    assert g["high"] == pytest.approx(mu_d + t.ppf(0.975, 2) * sd_d * math.sqrt(1 / 3 + 1 / 2)) and res["agree"]
    far = peer_study(tmp_path / "far", {"modern_recipe": [45.0, 45.5], "separate_downsampling": [35.0, 34.5]})
    assert peer.main([str(study), str(far), str(near), "--out", str(tmp_path / "v.json")]) == 1
    out = capsys.readouterr().out
    assert "the loops DISAGREE" in out and "| `modern_recipe` |" in out and "| 5 |" in out
    assert read_json(tmp_path / "v.json")["verdict"] == "DISAGREE"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not os.environ.get("TIMM_TRAIN"), reason="set $TIMM_TRAIN to timm's train.py (not in timm's wheel)")
def test_through_timm_train_py(tmp_path):
    """The peer check's pipeline on 2 tiny runs: experiments/peer_check.sh tiny."""
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO),
           "DATA": str(tmp_path / "data")}
    out = subprocess.run(["bash", str(REPO / "experiments" / "peer_check.sh"), "tiny"], env=env, capture_output=True,
                         text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for variant, step in (("registry", "modern_recipe"), ("own", "separate_downsampling")):
        m = read_json(tmp_path / "out" / "tiny-results" / f"timm-{variant}" / "runs" / step / "seed0" / "metrics.json")
        assert m["epochs_done"] == 2 and 0 <= m["top1"] <= 100 and m["loop"]["commit"]
