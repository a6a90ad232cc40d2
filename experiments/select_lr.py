"""The proxy study's learning-rate rule (docs/studies/proxy64.md): for one recipe, the multiplier whose
ResNet-50 row (classic: baseline, modern: modern_recipe) has the highest seed-0 top-1 at the last
epoch; ties within 0.5 points go to the smaller multiplier. Reads the grid's metrics.json files.

    python experiments/select_lr.py outputs/sweeps/lr_select-imagenette-proxy64-resnet50 modern
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROW = {"classic": "baseline", "modern": "modern_recipe"}


def select(sweep_dir: Path, recipe: str, tie: float = 0.5) -> dict:
    results = {}
    for p in sorted((sweep_dir / ROW[recipe]).glob("seed0*/metrics.json")):
        m = json.loads(p.read_text())
        mult = float(m["config"]["scale"]["lr_mult"][recipe])
        results[mult] = m["top1"]
    if not results:
        raise SystemExit(f"no finished {ROW[recipe]} runs under {sweep_dir}")
    best = max(results.values())
    chosen = min(k for k, v in results.items() if v >= best - tie)
    return {"recipe": recipe, "row": ROW[recipe], "top1_by_mult": results, "chosen": chosen}


if __name__ == "__main__":
    out = select(Path(sys.argv[1]), sys.argv[2])
    print(json.dumps(out))
