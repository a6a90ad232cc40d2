"""`python -m roadmap.report.compare <spec.yaml> [--page PAGE] [--out DIR] [--results DIR]`: one comparison
from the kept runs alone, as its spec declares it (docs/compare.md). Writes verdicts.md, compare.json and
the figures into <results>/<name>/ (or --out); with --page, refills that study page's generated block.
Exit 2 with one line for a bad spec, a refused run (a duplicate, a broken expectation) or a page without
its block, before anything is written."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ...files import atomic_write_text, write_json
from .analysis import analyse
from .render import check_page, markdown, update_page
from .spec import Spec, load_spec
from .studies import cost, read_studies


def compare(spec: Spec, results: Path) -> Dict[str, Any]:
    """The whole comparison as one JSON-able dict (compare.json)."""
    studies = read_studies(spec, results)
    return {"spec": spec.path.as_posix(), "name": spec.name, "title": spec.title, "metric": spec.metric,
            "regime": spec.regime, **analyse(spec, studies), "cost": cost(results, spec.cap) if spec.cap else None}


def log_wandb(result: Dict[str, Any], spec: Spec, out_dir: Path, mode: str) -> None:
    """The comparison's W&B report run: its figures and the verdict table (offline by default)."""
    import wandb

    run = wandb.init(project="roadmap", id=f"report-{spec.name}", name=f"report: {spec.name}", job_type="report",
                     group=spec.name, dir=str(out_dir), mode=mode, resume="allow", reinit=True)
    try:
        table = wandb.Table(columns=["hypothesis", "measurement", "value", "se", "verdict"],
                            data=[[k, v["what"], v.get("D"), v.get("se"), v["verdict"]] for k, v in result["hypotheses"].items()])
        run.log({"compare/verdicts": table,
                 **{f"compare/{name}": wandb.Image(str(out_dir / f"{name}.png")) for name in spec.figures}})
    finally:
        run.finish()


def build(spec: Spec, results: Optional[Path] = None, out: Optional[Path] = None, page: Optional[Path] = None,
          wandb_mode: str = "disabled", figures: bool = True, command: Optional[str] = None) -> Path:
    """Read, decide, write: verdicts.md, compare.json, the figures, the page's block. Every refusal
    (ValueError) comes before the first write."""
    results = Path(results if results is not None else spec.results)
    if not results.is_dir():
        raise ValueError(f"{results}: no such results folder (the spec's `results`, or --results)")
    out = Path(out or results / spec.name)
    if page is not None:
        check_page(Path(page), spec)
    result = compare(spec, results)
    command = command or f"python -m roadmap.report.compare {spec.path.as_posix()}"
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        from .figures import plot_all  # matplotlib only when drawing

        plot_all(result, spec, out)
    atomic_write_text(out / "verdicts.md", markdown(result, spec, out, command))
    write_json(out / "compare.json", result)
    if page is not None:
        update_page(Path(page), result, spec, out, command + f" --page {Path(page).as_posix()}")
    if wandb_mode != "disabled":
        log_wandb(result, spec, out, wandb_mode)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report.compare", description=__doc__.split("\n")[0],
                                epilog="The spec format: docs/compare.md.")
    p.add_argument("spec", type=Path, help="the comparison spec (YAML)")
    p.add_argument("--results", type=Path, default=None, help="the folder the spec's run sources are under "
                                                              "(default: the spec's `results`, else results)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <results>/<the spec's name>)")
    p.add_argument("--page", type=Path, default=None, help="also refill this study page's block (the spec's page_block markers)")
    p.add_argument("--contrast", action="append", default=[], metavar="NAME=FROM:TO",
                   help="one more paired contrast, step FROM -> step TO, in every study's table (repeatable)")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default="disabled",
                   help="also log a W&B report run (default disabled)")
    a = p.parse_args(argv)
    command = " ".join(["python -m roadmap.report.compare", a.spec.as_posix()]
                       + (["--results", a.results.as_posix()] if a.results is not None else [])
                       + (["--out", a.out.as_posix()] if a.out is not None else [])
                       + [f"--contrast {c}" for c in a.contrast])
    try:
        spec = load_spec(a.spec, a.contrast)
        out = build(spec, a.results, a.out, a.page, a.wandb, command=command)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"comparison: {out / 'verdicts.md'}\n" + "".join(f"figure: {out / name}.png\n" for name in spec.figures), end="")
    return 0
