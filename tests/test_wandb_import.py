"""Kept runs of a results study become W&B runs (roadmap/report/wandb_import.py), offline.

A real smoke sweep (2 steps, 2 epochs on 32 images, logger=none) keeps its runs with
keep_runs=true; the CLI imports the study's kept runs into --out and builds the dashboard, twice.
The imported runs are read back with W&B's own reader of offline run files (`wandb leet
inspect`, tracking.read_offline_run) and compared with the kept files. Nothing here touches the
network: W&B is offline, no API key, and its server address is one where nothing listens.
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roadmap import report
from roadmap.files import read_csv, read_json, write_json
from roadmap.report import dashboard, wandb_import
from roadmap.report.paper import regime_ref
from roadmap.tracking import KEYS, flat_keys, read_offline_run

STEPS = {"stage_ratio": 2, "patchify_stem": 3}  # step -> its index on the roadmap
STUDY = "imagenette-smoke-kept"
TITLE = "roadmap ResNet-50 → ConvNeXt-T: imagenette, smoke scale, resnet50 regime, seed 0 (kept)"
WORKSPACE = "roadmap steps: imagenette smoke resnet50, seed 0 (kept)"


@pytest.fixture(scope="module")
def offline_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: any network use would fail
        mp.delenv("WANDB_API_KEY", raising=False)
        yield mp


@pytest.fixture(scope="module")
def study(imagenette, offline_env, tmp_path_factory):
    """A real study: a 2-step sweep whose finished runs keep_runs=true copied into results/<study>/runs/."""
    tmp = tmp_path_factory.mktemp("kept")
    env = {**os.environ, "ROADMAP_REPORT": "0"}
    cmd = [sys.executable, "-m", "roadmap", "-m", f"step={','.join(STEPS)}", "scale=smoke", "scale.max_train_samples=32",
           "scale.max_val_samples=16", "scale.workers=0", "logger=none", "keep_runs=true", f"out_dir={tmp / 'out'}",
           f"results_dir={tmp / 'results'}", f"data.cache_dir={tmp / 'cache'}", "experiment_name=kept"]
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    study = tmp / "results" / STUDY
    assert sorted(p.parent.parent.name for p in study.glob("runs/*/*/metrics.json")) == sorted(STEPS)
    return study


def _tree(root: Path, skip: Path = None):
    """Every file under root (but under `skip`) with a hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and (skip is None or skip not in p.parents)}


def _cli(args):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = report.main([str(a) for a in args])
    return rc, stdout.getvalue()


def _sync_block(stdout: str):
    """The paths of the printed `wandb sync \\` command, and the line after it."""
    lines = stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.strip() == "wandb sync \\")
    paths = []
    for line in lines[i + 1:]:
        paths.append(line.strip().rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return paths, lines[i + 1 + len(paths)].strip()


@pytest.fixture(scope="module")
def imported(study, offline_env, tmp_path_factory):
    """`python -m roadmap.report <study> --out dash --wandb-import --wandb-dashboard`, run twice from an
    empty working directory; the files before and after; what W&B's reader reads back."""
    cwd = tmp_path_factory.mktemp("cwd")
    out = cwd / "dash"
    before = {"study": _tree(study), "cwd": _tree(cwd)}
    offline_env.chdir(cwd)
    runs = []
    for _ in range(2):
        rc, stdout = _cli([study, "--out", out, "--wandb-import", "--wandb-dashboard"])
        assert rc == 0
        runs.append(({p.name for p in (out / "wandb").glob("offline-run-*")}, stdout))
    kept = {d.parent.name: d for d in study.glob("runs/*/*")}
    read = {step: read_offline_run(wandb_import.offline_dirs(out, wandb_import.kept_id(d))[0], history=True)
            for step, d in kept.items()}
    (report_dir,) = (out / "wandb").glob("offline-run-*-report-*")
    return {"out": out, "cwd": cwd, "before": before, "runs": runs, "kept": kept, "read": read,
            "report": read_offline_run(report_dir), "spec": read_json(out / dashboard.SPEC_NAME)}


def _no_underscore(d):
    return {k: v for k, v in d.items() if not k.startswith("_")}


def test_imported_runs_equal_the_kept_files(imported):
    paper = regime_ref("convnext", "resnet50")  # reference.yaml
    for step, kept in imported["kept"].items():
        got = imported["read"][step]
        metrics = read_json(kept / "metrics.json")
        # config: the kept config + the two keys a live run adds (roadmap order)
        config = yaml.safe_load((kept / "config.yaml").read_text())
        assert _no_underscore(got["config"]) == {**config, "step_index": STEPS[step],
                                                 "roadmap_step": f"{STEPS[step]:03d}-{step}"}
        # history: one row per epoch of history.csv, W&B's step = the epoch
        rows = read_csv(kept / "history.csv")
        assert len(rows) == 2 and [h["_step"] for h in got["history"]] == [1, 2]
        for h, row in zip(got["history"], rows):
            assert _no_underscore(h) == {**{k: pytest.approx(float(v)) for k, v in row.items()}, "step_index": STEPS[step]}
        # summary: metrics.json's headline numbers and the paper's figures for the step
        for k in KEYS.summary:
            if k == "health":  # the verdict of metrics.json's health (roadmap/health.py)
                assert got["summary"][k] == metrics["health"]["verdict"], k
                continue
            expected = paper[k.removeprefix("paper_")][step] if k.startswith("paper_") else metrics[k]
            assert got["summary"][k] == pytest.approx(expected), k
        assert got["summary"]["train_img_s"] != pytest.approx(float(rows[-1]["train_img_s"]))  # metrics', not the last row's
        assert got["run"]["run_id"] == wandb_import.kept_run_id(STUDY, step, kept.name)
        assert got["run"]["group"] == STUDY and got["run"]["name"] == f"{STEPS[step]:02d}-{step}-s0"
        assert got["run"]["job_type"] == "path" and "kept-run" in got["run"]["tags"]


def test_a_second_import_creates_no_new_run(imported):
    (first, out1), (second, out2) = imported["runs"]
    kept = {d for d in first if "-kept-" in d}
    assert len(kept) == 2 and {d for d in second if "-kept-" in d} == kept  # the same two, untouched
    # the report run is logged again (its whole table), its older copy replaced: one each time
    assert [sum("-report-" in d for d in runs) for runs in (first, second)] == [1, 1] and len(second) == 3
    assert _sync_block(out1)[0][:2] == _sync_block(out2)[0][:2]


def test_a_changed_kept_run_replaces_its_import(imported, tmp_path):
    copy = tmp_path / "results" / STUDY
    shutil.copytree(imported["kept"]["stage_ratio"].parent.parent.parent, copy)
    first = wandb_import.import_study(copy, tmp_path / "w")
    assert [i.status for i in first] == ["new", "new"]
    # the same study name, step and seed: the same ids as the study's own import
    assert {i.run_id for i in first} == {wandb_import.kept_id(d) for d in imported["kept"].values()}
    metrics = copy / "runs" / "stage_ratio" / imported["kept"]["stage_ratio"].name / "metrics.json"
    write_json(metrics, {**read_json(metrics), "top1": 12.5})
    again = {i.run_dir.parent.name: i for i in wandb_import.import_study(copy, tmp_path / "w")}
    assert again["stage_ratio"].status == "updated" and again["patchify_stem"].status == "unchanged"
    (only,) = wandb_import.offline_dirs(tmp_path / "w", again["stage_ratio"].run_id)
    assert read_offline_run(only)["summary"]["top1"] == 12.5


def test_every_panel_key_is_in_the_imported_runs(imported):
    logged = {
        "history": {k for r in imported["read"].values() for h in r["history"] for k in h},
        "summary": {k for r in imported["read"].values() for k in r["summary"]},
        "config": {k for r in imported["read"].values() for k in flat_keys(r["config"])},
        "report": set(imported["report"]["summary"]),
    }
    assert set(KEYS.history) <= logged["history"] and set(KEYS.summary) <= logged["summary"]
    assert set(KEYS.config) <= logged["config"] and set(KEYS.report) <= logged["report"]
    keys = [k for item in imported["spec"]["panels"] + imported["spec"]["runsets"] for k in item["keys"]]
    assert len(imported["spec"]["panels"]) > 9 and keys
    for k in keys:
        section, name = k.split(":", 1)
        assert name in logged["config" if section in ("config", "toggles") else section], k
    assert imported["report"]["run"]["run_id"].startswith("report-")


def test_dashboard_names_the_study_and_syncs_exactly_its_runs(imported):
    spec, (_, stdout) = imported["spec"], imported["runs"][-1]
    assert spec["report_title"] == TITLE and spec["workspace_name"] == WORKSPACE
    assert spec["target"]["groups"] == [STUDY]
    assert all(rs["filters"].startswith(f"Metric('Group') == '{STUDY}'") for rs in spec["runsets"])
    paths, after = _sync_block(stdout)
    wandb_dir = imported["out"] / "wandb"
    expected = {str(p.relative_to(imported["cwd"])) for p in wandb_dir.glob("offline-run-*")}
    assert len(paths) == len(set(paths)) == 3 and set(paths) == expected
    assert spec["publish"]["commands"][0] == "wandb sync " + " ".join(paths)
    assert after == f"python -m roadmap.report {imported['kept']['stage_ratio'].parent.parent.parent} --out dash " \
                    "--wandb-dashboard --publish"


def test_nothing_is_written_outside_out(imported):
    assert _tree(imported["kept"]["stage_ratio"].parent.parent.parent) == imported["before"]["study"]
    assert _tree(imported["cwd"], skip=imported["out"]) == imported["before"]["cwd"]


def test_without_out_the_study_folder_holds_its_w_and_b_runs(imported, tmp_path, offline_env):
    copy = tmp_path / "results" / STUDY
    shutil.copytree(imported["kept"]["stage_ratio"].parent.parent.parent, copy)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    offline_env.chdir(cwd)
    rc, stdout = _cli([copy, "--wandb-import", "--wandb-dashboard"])
    assert rc == 0 and not list(cwd.iterdir())
    assert {p.parent for p in copy.rglob("run-*.wandb")} == set(map(Path, _sync_block(stdout)[0])) and \
        len(_sync_block(stdout)[0]) == 3 and all(p.parent == copy / "wandb" for p in copy.rglob("offline-run-*"))


def test_cli_refuses_what_it_cannot_import(imported, tmp_path, capsys):
    sweep = imported["kept"]["stage_ratio"].parent.parent.parent.parent.parent / "out" / "sweeps"
    sweep = next(sweep.iterdir())
    for args, words in (([sweep, "--wandb-import"], "one results study"),
                        ([imported["kept"]["stage_ratio"].parent.parent.parent, "--wandb-import", "--wandb", "disabled"],
                         "--wandb offline")):
        assert report.main([str(a) for a in args] + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --wandb-import") and words in err
        assert not (tmp_path / "x").exists()


def test_names_are_cut_at_a_word():
    assert dashboard.seeds_label([2, 0, 1]) == "seeds 0–2" and dashboard.seeds_label([0, 3]) == "seeds 0, 3"
    assert dashboard.seeds_label([4]) == "seed 4"
    text = "roadmap steps: " + " ".join(f"word{i}" for i in range(40))
    cut = dashboard._clip(text, 120)
    assert len(cut) <= 120 and cut.endswith("…") and text.startswith(cut[:-1])
    assert cut[:-1].split(" ")[-1] in text.split(" ")  # the last word is whole
    assert dashboard._clip("short", 120) == "short"
