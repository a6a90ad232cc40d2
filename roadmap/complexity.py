"""Complexity table: params and fvcore GFLOPs of every step, beside the paper's Tables 10/11.

    python -m roadmap.complexity                      # both regimes -> results/complexity.{md,csv}
    python -m roadmap.complexity --regime resnet50 --img-size 224 --out results
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List

from .config import ConfigError
from .files import atomic_write_text, markdown_table, write_csv
from .measure import count_gflops, count_params
from .model import build_model
from .steps import reference, step_info, step_names

FIELDS = ["regime", "step", "group", "params", "params_m", "gflops", "paper_gflops", "gflops_diff",
          "paper_top1"]


def rows_for(regime: str, img_size: int = 224, num_classes: int = 1000) -> List[Dict[str, Any]]:
    ref = reference()["convnext"]["regimes"][regime]
    rows = []
    for step in step_names():
        if step not in ref["gflops"]:
            continue
        model = build_model(step, regime=regime, num_classes=num_classes)
        g = count_gflops(model, img_size)
        paper = ref["figure2_gflops"].get(step, ref["gflops"][step])
        rows.append({
            "regime": regime, "step": step, "group": step_info(step)["group"],
            "params": count_params(model), "params_m": f"{count_params(model) / 1e6:.2f}",
            "gflops": f"{g:.3f}", "paper_gflops": paper, "gflops_diff": f"{g - paper:+.3f}",
            "paper_top1": ref["top1"][step],
        })
    return rows


def render(rows: List[Dict[str, Any]], img_size: int) -> str:
    out = [f"# Complexity of every roadmap step\n\n"
           f"Produced by `python -m roadmap.complexity`. fvcore GFLOPs (multiply-adds) at "
           f"{img_size}x{img_size}, 1000 classes, eval mode; fvcore also counts norms and pooling, "
           f"so its figures sit a few hundredths above the paper's. Paper columns: Tables 10/11 "
           f"(the `layer_norm` row of the ResNet-50 regime uses Figure 2's 4.2; Table 10 prints 4.46)."
           f" Side branches of the kernel sweep are in italics.\n"]
    for regime in dict.fromkeys(r["regime"] for r in rows):
        ends = reference()["convnext"]["regimes"][regime]["endpoints"]
        out.append(f"\n## {ends['start']} -> {ends['end']} (`regime={regime}`)\n\n")
        table = []
        for r in rows:
            if r["regime"] == regime:
                name = f"*{r['step']}*" if step_info(r["step"])["branch"] else f"`{r['step']}`"
                table.append({**r, "step": name, "params": f"{r['params']:,}"})
        out.append(markdown_table(table, ["step", "group", "params", "gflops", "paper_gflops", "gflops_diff", "paper_top1"],
                                  ["step", "group", "params", "GFLOPs (fvcore)", "GFLOPs (paper)", "diff", "paper top-1"],
                                  "llrrrrr"))
    return "".join(out)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", default="all", choices=["all", "resnet50", "resnet200"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--out", default="results", help="folder for complexity.md / complexity.csv ('' to skip)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    regimes = ["resnet50", "resnet200"] if args.regime == "all" else [args.regime]
    try:
        rows = [r for regime in regimes for r in rows_for(regime, args.img_size)]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = render(rows, args.img_size)
    print(text)
    if args.out:
        atomic_write_text(f"{args.out}/complexity.md", text)
        write_csv(f"{args.out}/complexity.csv", rows, FIELDS)
        print(f"wrote {args.out}/complexity.md and .csv in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
