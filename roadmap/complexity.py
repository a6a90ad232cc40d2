"""Complexity table: params and fvcore GFLOPs of every step, beside the paper's Tables 10/11.

    python -m roadmap.complexity                      # both -> results/complexity{,-cmt}.{md,csv}
    python -m roadmap.complexity --roadmap convnext --regime resnet50 --img-size 224 --out results
    python -m roadmap.complexity --roadmap cmt        # CMT-Ti/XS/S/B + ConvNeXt -> CMT steps
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List

from .config import ConfigError, reference, step_names
from .files import atomic_write_text, markdown_table, write_csv
from .measure import count_gflops, count_params
from .model import build_model
from .steps import step_info

FIELDS = ["regime", "step", "group", "params", "params_m", "gflops", "paper_gflops", "gflops_diff",
          "paper_top1"]
CMT_FIELDS = ["kind", "step", "label", "img_size", "params", "params_m", "official_params_m", "params_diff_pct",
              "gflops", "paper_params_m", "paper_gflops", "paper_top1"]


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


def cmt_rows(num_classes: int = 1000) -> List[Dict[str, Any]]:
    """CMT-Ti/XS/S/B at their native input sizes, then the ConvNeXt -> CMT steps at 224."""
    ref = reference()["cmt"]
    rows = []
    for step, v in ref["variants"].items():
        model = build_model(step, num_classes=num_classes)
        p = count_params(model)
        rows.append({
            "kind": "variant", "step": step, "label": v["name"], "img_size": v["img_size"],
            "params": p, "params_m": f"{p / 1e6:.2f}", "official_params_m": v["official_params_m"],
            "params_diff_pct": f"{(p / (v['official_params_m'] * 1e6) - 1) * 100:+.2f}",
            "gflops": f"{count_gflops(model, v['img_size']):.3f}", "paper_params_m": v["params_m"],
            "paper_gflops": v["gflops"], "paper_top1": v["top1"]})
    path = [ref["steps"][0]["parent"]] + [s["name"] for s in ref["steps"]]
    paper = ref["regimes"]["resnet50"]
    for step in path:
        model = build_model(step, num_classes=num_classes)
        p = count_params(model)
        rows.append({
            "kind": "hybrid", "step": step, "label": step_info(step)["label"], "img_size": 224,
            "params": p, "params_m": f"{p / 1e6:.2f}", "official_params_m": "", "params_diff_pct": "",
            "gflops": f"{count_gflops(model, 224):.3f}", "paper_params_m": "",
            "paper_gflops": paper["gflops"].get(step, ""), "paper_top1": paper["top1"].get(step, "")})
    return rows


def render_cmt(rows: List[Dict[str, Any]]) -> str:
    out = ["# Complexity of CMT and of the ConvNeXt -> CMT roadmap\n\n"
           "Produced by `python -m roadmap.complexity --roadmap cmt`. fvcore GFLOPs (multiply-adds), "
           "1000 classes, eval mode, with a handle for `scaled_dot_product_attention` that counts the "
           "attention matmuls (q·kᵀ and attn·v: 2·heads·N·M·head_dim per image; without it fvcore counts "
           "them as 0: 3.912 instead of 4.087 GFLOPs for CMT-S, whose attention is 0.175 GFLOPs). "
           "torchprofile, which also counts the attention, gives 4.053 for CMT-S (it counts a norm "
           "as 1 op per element where fvcore counts LayerNorm as 5).\n\n"
           "## CMT variants at their native input size\n\n"
           "Official params: the official code (huawei-noah/Efficient-AI-Backbones, cmt_pytorch) at "
           "1000 classes, whose relative position bias is sized for the native input. Paper: Guo et "
           "al., CVPR 2022, Table 2. CMT-S: the paper prints 25.1 M params; the official code, and "
           "this model parameter for parameter, have 26.26 M (of which 0.29 M are the relative "
           "position bias); we follow the code.\n\n"]
    table = [{**r, "step": f"`{r['step']}`", "params": f"{r['params']:,}"} for r in rows if r["kind"] == "variant"]
    out.append(markdown_table(table, ["label", "step", "img_size", "params", "official_params_m", "params_diff_pct",
                                      "gflops", "paper_params_m", "paper_gflops", "paper_top1"],
                              ["variant", "step", "input", "params", "official (M)", "diff %", "GFLOPs (fvcore)",
                               "paper params (M)", "paper GFLOPs", "paper top-1"], "llrrrrrrrr"))
    out.append("\n## ConvNeXt-T -> CMT-S (`experiment=convnext_to_cmt`), at 224 px\n\n"
               "Each step adds one of CMT's ideas to the previous one under the same (modern) recipe; "
               "the last step takes CMT-S's macro design and is CMT-S.\n\n")
    table = [{**r, "step": f"`{r['step']}`", "params": f"{r['params']:,}"} for r in rows if r["kind"] == "hybrid"]
    out.append(markdown_table(table, ["step", "label", "params", "params_m", "gflops", "paper_gflops", "paper_top1"],
                              ["step", "change", "params", "params (M)", "GFLOPs (fvcore)", "paper GFLOPs",
                               "paper top-1"], "llrrrrr"))
    return "".join(out)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--roadmap", default="all", choices=["all", "convnext", "cmt"],
                   help="convnext: complexity.{md,csv}; cmt: complexity-cmt.{md,csv}; all: both")
    p.add_argument("--regime", default="all", choices=["all", "resnet50", "resnet200"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--out", default="results", help="folder for complexity.md / complexity.csv ('' to skip)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    regimes = ["resnet50", "resnet200"] if args.regime == "all" else [args.regime]
    try:
        if args.roadmap in ("all", "convnext"):
            rows = [r for regime in regimes for r in rows_for(regime, args.img_size)]
            text = render(rows, args.img_size)
            print(text)
            if args.out:
                atomic_write_text(f"{args.out}/complexity.md", text)
                write_csv(f"{args.out}/complexity.csv", rows, FIELDS)
                print(f"wrote {args.out}/complexity.md and .csv in {time.perf_counter() - t0:.1f} s")
        if args.roadmap in ("all", "cmt"):
            rows = cmt_rows()
            text = render_cmt(rows)
            print(text)
            if args.out:
                atomic_write_text(f"{args.out}/complexity-cmt.md", text)
                write_csv(f"{args.out}/complexity-cmt.csv", rows, CMT_FIELDS)
                print(f"wrote {args.out}/complexity-cmt.md and .csv in {time.perf_counter() - t0:.1f} s")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
