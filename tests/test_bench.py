"""roadmap.bench on tiny settings: table structure, interleaving, the markdown report, the CLI's
checks, and the proxy-scale data-path measurements on a few real images."""
import shutil

import pytest

from roadmap import bench as bench_mod
from roadmap.bench import Settings, bench, device_slug, endpoint_ratios, main

TINY = dict(repeats=2, warmup=1, iters=1, width_mult=0.25, num_classes=10)  # test-only: 2 repeats


def test_bench_tiny_table_ratios_and_markdown(tmp_path, monkeypatch):
    calls = []
    real_timed = bench_mod.Runner.timed

    def timed(self, mode, iters):
        calls.append((self.cand.label, mode))
        return real_timed(self, mode, iters)

    monkeypatch.setattr(bench_mod.Runner, "timed", timed)
    out = tmp_path / "bench.md"
    res = bench(["separate_downsampling"], "cpu", [32], [4], out=out, settings=Settings(**TINY),
                argv=["python", "-m", "roadmap.bench", "--tiny"], log=lambda *_: None)
    results = res["results"]
    # one step + both timm endpoints, train and infer each
    assert [(m.name, m.source, m.mode) for m in results] == [
        ("resnet50", "timm", "train"), ("resnet50", "timm", "infer"),
        ("separate_downsampling", "ours", "train"), ("convnext_tiny", "timm", "train"),
        ("separate_downsampling", "ours", "infer"), ("convnext_tiny", "timm", "infer")]
    for m in results:
        assert m.img_size == 32 and m.batch == 4 and m.iters == 1 and len(m.img_s) == 2
        assert all(v > 0 for v in m.img_s) and m.median > 0 and m.peak_mb > 0
    # ours and timm alternate repeat by repeat (ours, timm, timm, ours)
    pair = [c for c in calls if c[0] in ("separate_downsampling (ours)", "convnext_tiny (timm)") and c[1] == "train"]
    assert pair == [("separate_downsampling (ours)", "train"), ("convnext_tiny (timm)", "train"),
                    ("convnext_tiny (timm)", "train"), ("separate_downsampling (ours)", "train")]
    ratios = res["ratios"]
    assert [(r.ours, r.timm, r.mode) for r in ratios] == [("separate_downsampling", "convnext_tiny", "train"),
                                                          ("separate_downsampling", "convnext_tiny", "infer")]
    for r in ratios:
        ours = next(m for m in results if m.source == "ours" and m.mode == r.mode)
        timm = next(m for m in results if m.name == "convnext_tiny" and m.mode == r.mode)
        assert r.ratio == pytest.approx(ours.median / timm.median) and r.lo <= r.hi
    assert endpoint_ratios(results) == ratios
    text = out.read_text()
    assert text.startswith("# Benchmark: ours vs timm (cpu)")
    assert "`python -m roadmap.bench --tiny`" in text and "threads: 2" in text and "timm 1." in text
    assert "| ours | timm | lever | mode | px | batch | ours/timm (ratio of medians) | per-repeat min–max | ≥ 0.97 |" in text
    assert text.count("| separate_downsampling | convnext_tiny |") == 2
    rows = [l for l in text.splitlines() if l.startswith("| ") and " | 32 | 4 | " in l]
    assert len(rows) == 6 + 2  # measurements + ratios
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_checks_its_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--repeats", "2", "--out", str(tmp_path / "x.md")])
    assert e.value.code == 2 and "at least 5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--steps", "no_such_step", "--out", str(tmp_path / "x.md")])
    assert e.value.code == 2 and "unknown step" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()
    assert device_slug("cpu") == "cpu"


def test_cli_endpoints_only(tmp_path):
    out = tmp_path / "b.md"
    assert main(["--endpoints-only", "--steps", "baseline", "kernel_7", "--img-size", "32", "--batch-size", "2",
                 "--repeats", "5", "--iters", "1", "--warmup", "0", "--width-mult", "0.25", "--num-classes", "10",
                 "--mode", "infer", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| baseline | resnet50 | - | infer | 32 | 2 |" in text and "kernel_7" not in text.split("## All")[1]
    assert "repeats: 5 timed blocks" in text


def test_cli_checks_levers(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--levers", "fp16", "--out", str(tmp_path / "x.md")])
    assert e.value.code == 2 and "unknown lever(s) fp16" in capsys.readouterr().err


def test_loader_and_epoch_time_on_real_images(tmp_path, imagenette):
    root = tmp_path / "src"
    for split in ("train", "val"):
        for c in sorted(p.name for p in (imagenette / split).iterdir())[:2]:
            (root / split / c).mkdir(parents=True)
            for f in sorted((imagenette / split / c).iterdir())[:8]:
                shutil.copy2(f, root / split / c / f.name)
    overrides = ["data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                 "scale.batch_size=4", "scale.workers=0"]
    out = tmp_path / "bench.md"
    res = bench(["separate_downsampling"], "cpu", [32], [2], mode="infer", out=out, endpoints_only=True,
                loader_batches=2, epoch_repeats=1, epoch_max_steps=2, settings=Settings(**TINY),
                overrides=overrides, log=lambda *_: None)
    loader = res["loader"]
    assert loader["batch"] == 4 and loader["img_size"] == 64 and loader["width_mult"] == 0.25
    (l,) = loader["loaders"]
    assert l["recipe"] == "modern" and l["workers"] == 0 and l["images"] == 8 and l["img_s"] > 0
    (m,) = loader["models"]
    assert m["step"] == "separate_downsampling" and m["img_s"] > 0 and m["batch"] == 4
    epoch = res["epoch"]
    assert len(epoch["on"]) == len(epoch["off"]) == 1 and min(epoch["on"] + epoch["off"]) > 0
    assert epoch["info"]["on"]["steps"] == 2 and epoch["info"]["on"]["train_images"] == 16
    text = out.read_text()
    assert "## Data path: loader vs model at proxy scale" in text and "| separate_downsampling | modern |" in text
    assert "## Epoch time: `separate_downsampling`" in text and "| true (prepared uint8 cache) |" in text
    assert list((tmp_path / "cache").glob("*.json"))  # the cache went to data.cache_dir


def test_levers_are_interleaved_and_compared_with_fp32(tmp_path, monkeypatch):
    """--levers: one model under fp32 and channels_last (and timm's counterpart under both, with
    --endpoints-only), block by block in one process; ratios lever / fp32 per model; the markdown table."""
    calls = []
    real_timed = bench_mod.Runner.timed

    def timed(self, mode, iters):
        calls.append(self.cand.label)
        assert self.s.channels_last == (self.cand.lever == "channels_last")
        return real_timed(self, mode, iters)

    monkeypatch.setattr(bench_mod.Runner, "timed", timed)
    out = tmp_path / "levers.md"
    res = bench(["separate_downsampling"], "cpu", [32], [4], mode="train", out=out, endpoints_only=True,
                settings=Settings(**TINY), argv=["python", "-m", "roadmap.bench", "--levers"], log=lambda *_: None,
                levers=["fp32", "channels_last"])
    labels = ["separate_downsampling (ours, fp32)", "separate_downsampling (ours, channels_last)",
              "convnext_tiny (timm, fp32)", "convnext_tiny (timm, channels_last)"]
    assert [m.label for m in res["results"]] == labels
    assert calls == labels + labels[::-1]  # repeat 2 in reverse order
    lr = res["levers"]
    assert [(r.name, r.lever, r.base) for r in lr] == [("separate_downsampling", "channels_last", "fp32"),
                                                       ("convnext_tiny", "channels_last", "fp32")]
    by = {m.label: m for m in res["results"]}
    assert lr[0].ratio == pytest.approx(by[labels[1]].median / by[labels[0]].median)
    # ours / timm per lever
    assert sorted(r.lever for r in res["ratios"]) == ["channels_last", "fp32"]
    text = out.read_text()
    assert "## Speed levers" in text and "| channels_last / fp32 |" in text
    assert "bf16 instructions:" in text and "warm-up s" in text


@pytest.mark.slow  # CI time; its figures are recorded in results/bench-cpu.md
def test_processes_side_by_side_in_real_processes(tmp_path):
    """--processes 2: one 2-thread worker against two 1-thread workers that train at the same time."""
    from roadmap.bench import run_processes

    s = Settings(**TINY, threads=2)
    res = run_processes(["baseline"], 32, 4, s, "fp32", procs=2, seconds=0.3, repeats=2, log=lambda *_: None)
    (p,) = res
    assert (p.cores, p.procs, len(p.single), len(p.side_by_side)) == (2, 2, 2, 2)
    assert all(v > 0 for v in p.single + p.side_by_side) and p.ratio > 0
    with pytest.raises(ValueError):
        run_processes(["baseline"], 32, 4, Settings(**TINY, threads=3), procs=2)
