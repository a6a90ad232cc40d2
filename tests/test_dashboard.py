"""W&B comparison dashboards (roadmap/report/dashboard.py) for a real smoke sweep, offline.

A real 2-step sweep logs to W&B offline and builds its dashboard in the report callback; the
tests check the report's and the workspace's panels (count, kinds, keys) against the keys the
runs really logged (read back from their offline run files by W&B's own reader), the offline
specification and the printed publish commands. Nothing here touches the network: publishing is
only checked to refuse at once (offline, no API key, server unreachable on 127.0.0.1:9), and its
wiring with W&B's save calls replaced.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roadmap import report
from roadmap.report import dashboard
from roadmap.tracking import KEYS, flat_keys, read_offline_run

STEPS = ("stage_ratio", "patchify_stem")  # one toggle apart: model.stem resnet -> patchify
SUBSET = ["scale.max_train_samples=32", "scale.max_val_samples=16"]
REPORT_KINDS = ["BarPlot", "WeavePanelSummaryTable", "LinePlot", "LinePlot", "LinePlot", "RunComparer",
                "ParallelCoordinatesPlot", "ScatterPlot", "ScatterPlot"]
WORKSPACE_SECTIONS = {  # section -> panel kinds
    "Trajectory: ours vs the paper, in roadmap order": ["BarPlot"],
    "Learning curves per step": ["LinePlot"] * 3,
    "What changes between consecutive steps": ["MarkdownPanel", "RunComparer", "ParallelCoordinatesPlot"],
    "Cost versus accuracy": ["ScatterPlot"] * 2,
}


@pytest.fixture(scope="module")
def smoke(imagenette, tmp_path_factory):
    """A real sweep (2 steps, 1 epoch on 32 images) logged to W&B offline; the report callback
    builds the dashboard (hydra.callbacks.report.dashboard=true)."""
    tmp = tmp_path_factory.mktemp("dash")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "roadmap", "-m", f"step={','.join(STEPS)}", "scale=smoke", *SUBSET, "scale.epochs=1",
           "scale.workers=0", "logger=wandb", "logger.mode=offline", "hydra.callbacks.report.dashboard=true",
           f"out_dir={tmp / 'out'}", f"results_dir={tmp / 'results'}", f"data.cache_dir={tmp / 'cache'}",
           "experiment_name=dash"]
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp / "out" / "sweeps" / "dash-imagenette-smoke-resnet50"
    results = tmp / "results" / "imagenette-smoke-dash"
    runs = {s: next((sweep / s).glob("seed0*")) for s in STEPS}
    return {"tmp": tmp, "sweep": sweep, "results": results, "runs": runs, "stdout": out.stdout,
            "spec": json.loads((results / dashboard.SPEC_NAME).read_text())}


@pytest.fixture(scope="module")
def logged(smoke):
    """What the runs really logged, read back from their offline run files."""
    (train_dir,) = (smoke["runs"]["patchify_stem"] / "wandb").glob("offline-run-*")
    (report_dir,) = (smoke["sweep"] / "wandb").glob("offline-run-*-report-*")
    train = read_offline_run(train_dir, history=True)
    rep = read_offline_run(report_dir, history=True)
    return {
        "history": {k for row in train["history"] for k in row},
        "summary": set(train["summary"]),
        "config": set(flat_keys(train["config"])),
        "report": set(rep["summary"]),
        "run": train["run"], "report_run": rep["run"], "train_config": train["config"],
    }


def test_registry_matches_what_a_real_run_logs(logged):
    """tracking.KEYS is what the runs log: renaming a metric in train.py breaks this test
    before it breaks a panel."""
    assert set(KEYS.history) <= logged["history"], set(KEYS.history) - logged["history"]
    assert set(KEYS.summary) <= logged["summary"], set(KEYS.summary) - logged["summary"]
    assert set(KEYS.config) <= logged["config"], set(KEYS.config) - logged["config"]
    assert set(KEYS.toggles) <= set(KEYS.config)
    assert set(KEYS.report) <= logged["report"], set(KEYS.report) - logged["report"]
    assert logged["train_config"]["roadmap_step"] == "003-patchify_stem"
    assert logged["run"]["group"] == logged["report_run"]["group"] == "dash-imagenette-smoke-resnet50"
    assert logged["report_run"]["job_type"] == "report" and logged["run"]["job_type"] == "path"


def test_every_panel_key_is_logged_by_the_runs(smoke, logged):
    spec = smoke["spec"]
    keys = [k for item in spec["panels"] + spec["runsets"] for k in item["keys"]]
    assert keys
    for k in keys:
        section, name = k.split(":", 1)
        pool = logged["config"] if section in ("config", "toggles") else logged[section]
        assert name in pool, f"{k} is used by a panel but the runs do not log it"
    assert set(spec["keys_used"]["history"]) == {"epoch", "top1", "val_loss", "train_loss"}
    # the learning curves are grouped by step with seeds aggregated (mean, ± std band)
    curves = [p for p in spec["report"]["spec"]["blocks"] if p["type"] == "panel-grid"
              for p in p["metadata"]["panelBankSectionConfig"]["panels"] if p["viewType"] == "Run History Line Plot"]
    assert len(curves) == 3
    assert all(c["config"]["groupBy"] == "roadmap_step.value" and c["config"]["groupAgg"] == "mean"
               and c["config"]["groupArea"] == "stddev" and c["config"]["xAxis"] == "epoch" for c in curves)


def test_report_and_workspace_panels(smoke):
    spec = smoke["spec"]
    report_panels = [p for p in spec["panels"] if p["where"].startswith("report/")]
    assert [p["kind"] for p in report_panels] == REPORT_KINDS
    # the serialised report holds the same panels, in the same order, as W&B view types
    grids = [b for b in spec["report"]["spec"]["blocks"] if b["type"] == "panel-grid"]
    view_types = [p["viewType"] for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]
    assert view_types == ["Bar Chart", "Weave", "Run History Line Plot", "Run History Line Plot",
                          "Run History Line Plot", "Run Comparer", "Parallel Coordinates Plot", "Scatter Plot",
                          "Scatter Plot"]
    for g in grids:  # every run set names the sweep's project and W&B group
        (rs,) = g["metadata"]["runSets"]
        assert rs["project"]["name"] == "roadmap"
        assert rs["filters"]["filters"][0]["value"] == "dash-imagenette-smoke-resnet50"
    bar = grids[0]["metadata"]["panelBankSectionConfig"]["panels"][0]["config"]
    assert bar["metrics"] == ["top1", "paper_top1"] and bar["groupBy"] == "roadmap_step.value"
    assert grids[0]["metadata"]["runSets"][0]["grouping"] == [{"section": "config", "name": "roadmap_step.value"}]
    pc = next(p for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]
              if p["viewType"] == "Parallel Coordinates Plot")
    assert [c["accessor"] for c in pc["config"]["columns"]] == ["config:model.value.stem", "summary:top1"]
    # the workspace: same panels, runs of the sweep grouped by step in roadmap order
    sections = spec["workspace"]["spec"]["section"]["panelBankConfig"]["sections"]
    assert {s["name"]: [p["viewType"] for p in s["panels"]] for s in sections} == {
        name: [{"BarPlot": "Bar Chart", "LinePlot": "Run History Line Plot", "MarkdownPanel": "Markdown Panel",
                "RunComparer": "Run Comparer", "ParallelCoordinatesPlot": "Parallel Coordinates Plot",
                "ScatterPlot": "Scatter Plot"}[k] for k in kinds] for name, kinds in WORKSPACE_SECTIONS.items()}
    (runset,) = spec["workspace"]["spec"]["section"]["runSets"]
    assert runset["grouping"] == [{"section": "config", "name": "roadmap_step.value"}]
    assert runset["sort"]["keys"] == [{"key": {"section": "summary", "name": "step_index"}, "ascending": True}]
    # the toggles that change between the two steps, from the runs' configs
    (first, second) = spec["toggle_changes"]
    assert first["step"] == "stage_ratio" and first["vs"] is None
    assert second["changes"] == [{"key": "model.stem", "from": "resnet", "to": "patchify"}]
    assert "`model.stem`: resnet → patchify" in json.dumps(spec["report"], ensure_ascii=False)


def test_offline_spec_and_publish_commands(smoke):
    spec, out = smoke["spec"], smoke["stdout"]
    sync_dirs = spec["publish"]["sync_dirs"]
    # every run's offline directory and the report run's, all of them real
    assert len(sync_dirs) == 3 and sum("-report-" in d for d in sync_dirs) == 1
    assert all(len(list((smoke["tmp"] / d).glob("run-*.wandb"))) == 1 for d in sync_dirs)
    sync, publish = spec["publish"]["commands"]
    assert sync == "wandb sync " + " ".join(sync_dirs)
    assert publish == (f"python -m roadmap.report out/sweeps/dash-imagenette-smoke-resnet50 "
                       "--out results/imagenette-smoke-dash --wandb-dashboard --publish")
    assert "W&B dashboard (built offline)" in out and "wandb sync \\" in out and publish in out
    assert all(d in out for d in sync_dirs)
    assert "published" not in spec and spec["target"]["entity"] is None


def test_cli_builds_offline_and_publish_refuses_at_once(smoke, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(smoke["tmp"])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "cli"
    assert report.main([str(smoke["sweep"]), "--out", str(out), "--wandb", "disabled", "--wandb-dashboard"]) == 0
    printed = capsys.readouterr().out
    assert (out / dashboard.SPEC_NAME).is_file() and "--wandb-dashboard --publish" in printed
    # --publish without the network: one line, exit 2, no work done
    for env in ({"WANDB_MODE": "offline"}, {"WANDB_MODE": "online", "HOME": str(tmp_path), "NETRC": str(tmp_path / "no"),
                                            "WANDB_BASE_URL": "http://127.0.0.1:9"}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        t = time.perf_counter()
        assert report.main([str(smoke["sweep"]), "--out", str(tmp_path / "pub"), "--publish"]) == 2
        err = capsys.readouterr().err
        assert time.perf_counter() - t < 5 and err.count("\n") == 1 and err.startswith("error: --publish needs")
        assert ("WANDB_MODE=offline" if env["WANDB_MODE"] == "offline" else "API key") in err
        assert not (tmp_path / "pub").exists()
    # a key but no server (nothing listens on 127.0.0.1:9): refused the same way, nothing hangs
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert report.main([str(smoke["sweep"]), "--out", str(tmp_path / "pub"), "--publish"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --publish cannot reach http://127.0.0.1:9")
    dash = dashboard.build(*_report_inputs(smoke["sweep"]), out)
    with pytest.raises(dashboard.PublishError, match="cannot reach http://127.0.0.1:9"):
        dashboard.publish(dash)


def _report_inputs(sweep):
    from roadmap.report.stats import summarize

    rows, context = report.collect_with_context(sweep)
    return rows, summarize(rows, context["regime"]), report.describe(rows, context)


def test_publish_saves_both_and_updates_them_next_time(smoke, tmp_path, monkeypatch, capsys):
    """The online path with W&B's save calls replaced (no network in tests): the entity reaches
    the report, its run sets and the workspace; URLs are printed and kept in dashboard.json, and a
    second publication updates the same report and view instead of making new ones."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    saved = []

    def save_report(self, draft=False, clone=False):
        saved.append(("report", self.id, self.entity, [(rs.entity, rs.project) for b in self.blocks
                                                       for rs in getattr(b, "runsets", None) or []]))
        self.id = self.id or "R1"
        return self

    def save_workspace(self):
        saved.append(("workspace", self._internal_name, self.entity, self.project))
        object.__setattr__(self, "_internal_name", self._internal_name or "nw-abc-v")
        object.__setattr__(self, "_internal_id", self._internal_id or "W1")
        return self

    monkeypatch.setattr(wr.Report, "save", save_report)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.test/{self.entity}/{self.project}/reports/{self.id}"))
    monkeypatch.setattr(ws.Workspace, "save", save_workspace)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://wandb.test/{self.entity}/{self.project}?nw={self._internal_name}"))
    monkeypatch.setattr(dashboard, "publish_problem", lambda probe=False: None)
    monkeypatch.setattr(dashboard, "_default_entity", lambda: "me")
    rows, summary, meta = _report_inputs(smoke["sweep"])
    for _ in range(2):
        dashboard.write_dashboard(rows, summary, meta, tmp_path, publish_now=True)
    out = capsys.readouterr().out
    assert "W&B report: https://wandb.test/me/roadmap/reports/R1" in out and "W&B workspace: https://wandb.test/me/roadmap?nw=nw-abc-v" in out
    (r1, w1, r2, w2) = saved
    assert r1[1] == "" and r2[1] == "R1" and w1[1] == "" and w2[1] == "nw-abc-v"  # the second run updates
    assert set(r1[3]) == {("me", "roadmap")} and r1[2] == w1[2] == "me"
    published = json.loads((tmp_path / dashboard.SPEC_NAME).read_text())["published"]
    assert published["report_id"] == "R1" and published["workspace_id"] == "W1"
