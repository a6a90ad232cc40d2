"""The proxy study's learning-rate rule (docs/studies/proxy64.md): for one recipe, the multiplier whose
row (by default the ResNet-50 row of that recipe: classic `baseline`, modern `modern_recipe`) has the
highest seed-0 top-1 at the last epoch; ties within 0.5 points go to the smaller multiplier. Reads the
grid's metrics.json files from one or more sweep or study folders (a study's runs/ folder is looked in
too), so a grid can be split between folders (issue 31 applies the rule on the ConvNeXt-T end:
docs/studies/proxy64-init-lr.md).

    python experiments/select_lr.py outputs/sweeps/lr_select-imagenette-proxy64-resnet50 modern
    python experiments/select_lr.py results/imagenette-proxy64-lr_select results/imagenette-proxy64 modern --row separate_downsampling
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, Optional

ROW = {"classic": "baseline", "modern": "modern_recipe"}


def select(dirs: Iterable[Path], recipe: str, row: Optional[str] = None, tie: float = 0.5) -> dict:
    row = row or ROW[recipe]
    results = {}
    for d in dirs:
        for base in (d, d / "runs"):
            for p in sorted((base / row).glob("seed0*/metrics.json")):
                m = json.loads(p.read_text())
                if m["config"].get("model", {}).get("init", "auto") != "auto":
                    continue  # a pinned-init run is not on the lr grid
                mult = float(m["config"]["scale"]["lr_mult"][recipe])
                results.setdefault(mult, m["top1"])
    if not results:
        raise SystemExit(f"no finished {row} seed-0 runs under {', '.join(map(str, dirs))}")
    best = max(results.values())
    chosen = min(k for k, v in results.items() if v >= best - tie)
    return {"recipe": recipe, "row": row, "top1_by_mult": dict(sorted(results.items())), "chosen": chosen}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("recipe", choices=sorted(ROW))
    ap.add_argument("--row", help="the step whose seed-0 runs are compared (default: the recipe's ResNet-50 row)")
    a = ap.parse_args()
    print(json.dumps(select(a.dirs, a.recipe, a.row)))
