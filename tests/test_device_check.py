"""experiments/device_check.sh as a CPU dry run through every stage (wheel install from a tiny
bundle, bench, loader bench, a 2-step packed path on real images with the on-device loader, report,
archive), the imports that path makes (each on the GPU machine's package list or in the bundle),
and roadmap.packed's deadline."""
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from roadmap import bundle, packed

REPO = Path(__file__).resolve().parent.parent

TRACER = '''import atexit, os, sys
class _Absent:  # packages the lent machine lacks and the bundle does not carry: importing them fails there too
    def find_spec(self, name, path=None, target=None):  # (timm.utils tries wandb and goes on without it)
        if name.split(".")[0] in ("wandb", "wandb_workspaces", "submitit"):
            raise ModuleNotFoundError(f"No module named {name!r} (not on the lent machine)", name=name)
        return None
sys.meta_path.insert(0, _Absent())
def _dump():
    names = sorted({m.split(".")[0] for m in list(sys.modules)})
    with open(os.environ["ROADMAP_IMPORT_LOG"], "a") as f:
        prog = sys.argv[0] or "-"  # python -m pkg: .../pkg/__main__.py -> pkg/__main__.py
        prog = "/".join(prog.split(os.sep)[-2:]) if os.path.basename(prog) == "__main__.py" else os.path.basename(prog)
        f.write(" ".join([prog] + names) + "\\n")
atexit.register(_dump)
'''


def fake_wheel(dest: Path) -> Path:
    """A minimal valid pure-Python wheel (pip installs it offline)."""
    name, ver = "roadmap_fake_pkg", "0.1"
    whl = dest / f"{name}-{ver}-py3-none-any.whl"
    di = f"{name}-{ver}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{di}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{di}/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return whl


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, imagenette):
    tmp = tmp_path_factory.mktemp("device_check")
    b = tmp / "bundle"
    (b / "wheels").mkdir(parents=True)
    fake_wheel(b / "wheels")
    bundle.pack_data(Path(imagenette), b / "imagenette-73px-webp90.npz", 73,
                     max_samples={"train": 20, "val": 10}, cache_dir=tmp / "packcache")
    tracer = tmp / "tracer"
    tracer.mkdir()
    (tracer / "sitecustomize.py").write_text(TRACER)
    out, work, log = tmp / "out", tmp / "work", tmp / "imports.txt"
    env = dict(os.environ, PYTHON=sys.executable, BUNDLE=str(b), WORK=str(work), DEVICE="cpu", SLOTS="2",
               SEEDS="0", STEPS="baseline separate_downsampling", LOADER_S="0.5",
               BUDGET_S="1500", BENCH_S="600", REPORT_S="300",  # generous: a loaded CI box must not hit them
               COMPILE_S="600", ROADMAP_IMPORT_LOG=str(log),
               PYTHONPATH=f"{tracer}:{os.environ.get('PYTHONPATH', '')}",
               BENCH_ARGS="--levers fp32 bf16+channels_last --device cpu --endpoints-only --mode train --img-size 32 "
                          "--batch-size 4 --width-mult 0.25 --repeats 5 --warmup 1 --iters 1 --threads 1",
               # the compile stage's plumbing, without compiling (inductor: tests/test_gpu_paths.py)
               COMPILE_ARGS="--levers fp32 --device cpu --steps baseline --mode train --img-size 32 --batch-size 4 "
                            "--width-mult 0.25 --repeats 5 --warmup 1 --iters 1 --threads 1",
               RUN_ARGS="scale=smoke scale.device=cpu scale.loader=device scale.epochs=1 scale.max_steps_per_epoch=2 "
                        "scale.batch_size=4 scale.width_mult=0.25 scale.img_size=32 scale.workers=0",
               # one budget curve of one run ({E} = 2 epochs)
               CURVE_EPOCHS="2", CURVE_STEPS="gelu", CURVE_SEEDS="0", CURVE_MIN_S="1", ARCHIVE_S="30",
               CURVE_ARGS="scale=smoke scale.device=cpu scale.loader=device scale.epochs={E} scale.max_steps_per_epoch=2 "
                          "scale.batch_size=4 scale.width_mult=0.25 scale.img_size=32 scale.workers=0")
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(REPO / "experiments" / "device_check.sh"), str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True,
                       timeout=float(os.environ.get("ROADMAP_DRY_RUN_TIMEOUT", "850")))
    return {"r": r, "out": out, "work": work, "imports": log, "seconds": time.perf_counter() - t0}


def test_dry_run_goes_through_every_stage(dry_run):
    r, out = dry_run["r"], dry_run["out"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["device_check.log", "results/bench-gpu-compile.md", "results/bench-gpu.md",
                     "results/imagenette-proxy_gpu/runs.tar.gz",
                     "results/imagenette-proxy_gpu/summary.json", "results/imagenette-proxy_gpu/trajectory.csv",
                     "results/imagenette-proxy_gpu/trajectory.md", "results/imagenette-proxy_gpu/trajectory.png"]
    log = (out / "device_check.log").read_text()
    assert log == r.stdout  # the log is complete when the script returns
    for stage in ("wheels from", "nvidia-smi", "versions and imports", "data:", "bench: eager", "bench: torch.compile", "device loader",
                  "GPU proxy: main path", "report", "archive", "done in"):
        assert f"] {stage}" in log, stage
    assert (dry_run["work"] / "site" / "roadmap_fake_pkg" / "__init__.py").exists()  # the wheel was installed
    assert "unpacked 20 train + 10 val images (73 px)" in log
    assert "packed: 2/2 runs finished" in log
    assert "# Benchmark" in (out / "results" / "bench-gpu.md").read_text()
    summary = json.loads((out / "results" / "imagenette-proxy_gpu" / "summary.json").read_text())
    assert summary
    with tarfile.open(out / "results" / "imagenette-proxy_gpu" / "runs.tar.gz") as t:
        names = t.getnames()
    for step in ("baseline", "separate_downsampling"):
        for f in ("metrics.json", "history.csv", "config.yaml", "train.log"):
            assert f"sweeps/imagenette-proxy_gpu/{step}/seed0/{f}" in names
    assert "sweeps/imagenette-proxy_gpu/packed.json" in names and "extra/loader.txt" in names
    # the budget curve: its run in the same archive
    for f in ("metrics.json", "history.csv", "config.yaml", "train.log"):
        assert f"sweeps/imagenette-proxy_gpu-e2/gelu/seed0/{f}" in names
    assert "] budget curve: 2 epochs, steps gelu, seeds 0" in log
    curve = json.loads((dry_run["work"] / "sweeps" / "imagenette-proxy_gpu-e2" / "gelu" / "seed0" / "metrics.json").read_text())
    assert curve["epochs_done"] == 2 and curve["config"]["experiment_name"] == "adhoc"
    m = json.loads((dry_run["work"] / "sweeps" / "imagenette-proxy_gpu" / "baseline" / "seed0" / "metrics.json").read_text())
    assert m["data"]["loader"] == "device (cpu)" and m["train_images"] == 20 and m["val_images"] == 10


def _distributions(module_lines):
    """Third-party distributions behind the imported top-level modules of every traced process."""
    pkg_to_dist = md.packages_distributions()
    local = {"roadmap", "sitecustomize", "__main__", "__mp_main__", "tests", "conftest", "roadmap_fake_pkg"}
    dists, unknown = set(), set()
    for line in module_lines:
        for mod in line.split()[1:]:
            if mod in sys.stdlib_module_names or mod in sys.builtin_module_names or mod in local:
                continue
            if mod == "hydra_plugins":  # the namespace Hydra scans for optional plugins (launchers): those
                continue                 # installed here are imported at start-up; Hydra runs without any
            if mod in pkg_to_dist:
                dists.update(bundle.canonical(d) for d in pkg_to_dist[mod])
            elif not mod.startswith("_") and mod != "cython_runtime":  # _cython_*, cython_runtime, _sysconfigdata_*,
                # torch's generated modules: no package
                unknown.add(mod)
    return dists - {"roadmap"}, unknown  # this project (its editable-install finder) travels as the tree


def _requirements_of(names):
    """The installed (here) non-optional requirements of `names`, transitively, canonical names."""
    import re
    from importlib import metadata

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r or "extra==" in r:
                continue
            dep = bundle.canonical(re.split(r"[\s;<>=!~\[(]", r.strip(), maxsplit=1)[0])
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_every_import_on_the_path_is_on_the_machine_or_in_the_bundle(dry_run):
    lines = dry_run["imports"].read_text().splitlines()
    progs = {line.split()[0] for line in lines}
    assert {"pip/__main__.py", "bench/__main__.py", "packed.py", "report/__main__.py", "roadmap/__main__.py"} <= progs, progs
    dists, unknown = _distributions(lines)
    assert not unknown, f"imported modules of no known distribution: {sorted(unknown)}"
    there = {bundle.canonical(n) for n in bundle.read_list(bundle.DEVICE_PACKAGES)}
    wheels = {bundle.canonical(n) for n in bundle.read_list(bundle.WHEEL_LIST)}
    # the machine's packages come with their own dependencies (e.g. huggingface_hub's HTTP stack, in
    # whatever version is installed there): what they import is theirs, not the bundle's
    # (sniffio: httpcore2, in that stack, tries it inside try/except ImportError and goes on without it)
    missing = sorted(dists - there - wheels - _requirements_of(there) - {"sniffio"})
    assert not missing, f"imported on the device check's path, on neither list: {missing}"
    assert {"hydra-core", "omegaconf", "fvcore"} <= dists and "wandb" not in dists  # logger=none keeps wandb out
    unused = sorted(wheels - dists)
    assert not unused, f"experiments/device_wheels.txt carries packages the path does not import: {unused}"


def test_packed_runs_respect_the_deadline(tmp_path):
    """roadmap.packed with a fake run command: finished runs, a run stopped at the deadline, runs never started."""
    def cmd(job, overrides, python=sys.executable):
        secs = {"fast": 0.2, "slow": 30}[job.step]
        code = (f"import time, pathlib; time.sleep({secs}); "
                f"pathlib.Path({job.run_dir!r}, 'metrics.json').write_text('{{}}')")
        return [python, "-c", code]

    orig = packed.command
    packed.command = cmd
    try:
        jobs = packed.plan(["fast", "slow", "fast"], [0, 1], tmp_path)
        t0 = time.monotonic()
        packed.run_packed(jobs, [], slots=2, deadline=time.monotonic() + 4, grace_s=2, log=lambda *_: None)
        took = time.monotonic() - t0
    finally:
        packed.command = orig
    status = [(j.step, j.seed, j.status) for j in jobs]
    assert status[0] == ("fast", 0, "finished") and status[1] == ("slow", 0, "killed")
    assert ("fast", 0, "finished") in status[2:3] and all(s in ("finished", "killed", "not started") for *_, s in status)
    assert any(s == "not started" for *_, s in status[3:]) or any(s == "killed" for *_, s in status[3:])
    assert took < 4 + 2 + 2  # deadline + grace + polling


def test_wheel_list_and_real_bundle_if_built(tmp_path):
    names = bundle.read_list(bundle.WHEEL_LIST)
    there = {bundle.canonical(n) for n in bundle.read_list(bundle.DEVICE_PACKAGES)}
    # only missing packages travel, and timm, pinned: the ours-vs-timm parity and the bench's ratios
    # depend on its version
    assert names and {bundle.canonical(n) for n in names} & there <= {"timm"}
    for n in names:
        md.version(n)  # pinned to what this environment has: it must be installed here
    wheels = sorted((REPO / ".device" / "wheels").glob("*.whl"))
    if not wheels:
        pytest.skip("no .device/ bundle here (make device-bundle)")
    got = {bundle.canonical(w.name.split("-")[0]): w.name.split("-")[1] for w in wheels}
    assert got == {bundle.canonical(n): md.version(n) for n in names}
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(tmp_path / "site"), *map(str, wheels)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
