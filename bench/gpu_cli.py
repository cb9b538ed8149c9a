"""What the GPU benchmarks share: their command line (--model, --json, --render), the check for a
GPU build, and the results' header (where and on which GPU they were measured)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from bench.report import machine, write_section

Render = Callable[[dict[str, object]], str]


def parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="`default` or a .gguf path (repeatable)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--render", type=Path, help="only turn a results file into docs/benchmarks.md's section")
    return ap


def rendered_only(args: argparse.Namespace, section: str, render: Render) -> bool:
    """--render: write a results file (measured on a GPU machine) into docs/benchmarks.md."""
    if args.render:
        write_section(section, render(json.loads(args.render.read_text())))
    return bool(args.render)


def measured_on() -> dict[str, object]:
    """Where the numbers come from: this machine and its first GPU; stops without a GPU build."""
    from edgellm.runtime import backends

    gpus = backends.gpus()
    if not gpus:
        raise SystemExit("no GPU in this llama.cpp build: set up with EDGELLM_GPU=cuda")
    return {"machine": machine(), "gpu": f"{gpus[0].description} ({gpus[0].total / 2**30:.0f} GiB)"}


def intro(script: str, results: dict[str, object]) -> str:
    return f"`python -m bench.{script}` on {results['machine']}; GPU: {results['gpu']}"


def finish(args: argparse.Namespace, results: dict[str, object], render: Render) -> None:
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(render(results))
