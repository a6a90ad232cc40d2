"""Adding a step costs config only (issue 21; docs/architecture.md "A new step"): a copy of the
package gets a side branch `kernel_3` of `move_up_dwconv` -- one step yaml and one row in
reference.yaml, no Python -- and trains it at smoke scale through the ordinary command line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import roadmap

STEP_YAML = """# @package _global_
# Large kernel: depthwise kernel 3 (a side branch; the path continues from kernel_7).
defaults:
  - move_up_dwconv
  - _self_
step: kernel_3
model:
  kernel_size: 3
"""
ROW_AFTER = '    - {name: move_up_dwconv,        group: large kernel,        label: "move ↑ d. conv"}\n'
ROW = '    - {name: kernel_3,              group: large kernel,        label: "kernel sz. → 3",  branch: true}\n'


def package_with_kernel_3(root: Path) -> Path:
    """A copy of the installed package with the new step's two config edits."""
    pkg = root / "roadmap"
    shutil.copytree(Path(roadmap.__file__).resolve().parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "conf" / "step" / "kernel_3.yaml").write_text(STEP_YAML)
    ref = pkg / "reference.yaml"
    text = ref.read_text()
    assert ROW_AFTER in text, "reference.yaml's move_up_dwconv row moved: update this test's anchor"
    ref.write_text(text.replace(ROW_AFTER, ROW_AFTER + ROW))
    return root


def test_a_step_from_config_alone_trains(tmp_path, imagenette):
    root = package_with_kernel_3(tmp_path / "pkg")
    env = {**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = ["step=kernel_3", "scale=smoke", "scale.max_train_samples=160", "scale.max_val_samples=80",
            "scale.epochs=1", "scale.workers=0", "logger=none", f"data.root={imagenette}",
            f"data.cache_dir={tmp_path / 'cache'}", "out_dir=out"]
    out = subprocess.run([sys.executable, "-m", "roadmap", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [metrics_path] = (tmp_path / "out").rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["step"] == "kernel_3" and metrics["branch"] is True and metrics["label"] == "kernel sz. → 3"
    assert metrics["group"] == "large kernel" and metrics["step_index"] == 8
    assert metrics["config"]["model"]["kernel_size"] == 3
    assert metrics["config"]["model"]["dw_position"] == "first"  # everything else from move_up_dwconv
    assert 0 <= metrics["top1"] <= 100 and metrics["epochs_done"] == 1
    # the unmodified package does not know the step: the edit above is what made it exist
    plain = subprocess.run([sys.executable, "-m", "roadmap", *args], cwd=tmp_path, capture_output=True, text=True,
                           env={k: v for k, v in env.items() if k != "PYTHONPATH"}, timeout=300)
    assert plain.returncode == 2 and "step='kernel_3' is unknown" in plain.stderr + plain.stdout
