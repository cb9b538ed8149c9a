"""A draft model (`--draft-model`) against plain decoding and against lookup alone: generation
tok/s where lookup finds little (free writing) and where it finds much (a quote), greedy.

The pairs.
- `--target qwen2.5-coder-1.5b --draft qwen2.5-coder-0.5b`: a real pair of one vocabulary
  (bench/models.py fetches it), the draft a third of the target's parameters.
- The default, when neither is given: the default model's F32 copy (its Q4_1 weights dequantized by
  llama.cpp: about 6x the bytes, the same answers up to rounding) drafted for by the default model.
  The draft agrees with the target most of the time but costs about half a target step on a CPU
  (compute, not memory, bounds a 135M model), so this pair tests whether `auto` stops using a draft
  model that does not pay.

Within each repeat the three modes run back to back in rotating order, so load from other work hits
all of them; ratios are medians of per-repeat ratios. Answers are compared token for token with
plain decoding (must be equal). Writes the `draft_model` section of docs/benchmarks.md
(`draft_model_pair` with --target).

    .venv/bin/python -m bench.bench_draft_model [--target M --draft M] [--repeats 3] [--tokens 96]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

from bench import report
from bench.bench_gpu_precision import rewritten
from bench.bench_lookup import TASKS, parting, run_task
from bench.models import model_arg
from bench.report import load_average, machine, write_section
from edgellm.commands.options import number
from edgellm.errors import EdgeLLMError
from edgellm.models.default_model import default_model_path
from edgellm.runtime.engine import Engine, LoadOptions, default_threads
from edgellm.runtime.lookup import DRAFT_AUTO, DRAFT_OFF

MODES = ("plain", "lookup", "draft model")


def task_list(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"no task {unknown[0]!r}: use a comma-separated list of {', '.join(TASKS)}")
    return names


def ratio(tps: dict[str, list[float]], mode: str) -> str:
    """Median of the per-repeat ratios of ``mode`` to plain decoding, with their range."""
    each = [a / b for a, b in zip(tps[mode], tps["plain"], strict=True)]
    return f"**{statistics.median(each):.2f}x** ({min(each):.2f}-{max(each):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=number(int, 1), default=3)
    ap.add_argument("--tokens", type=number(int, 1), default=96)
    ap.add_argument("--threads", type=number(int, 1), default=default_threads())
    ap.add_argument("--tasks", type=task_list, default="free,quote", help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--target", type=model_arg, help="default, qwen2.5-coder-1.5b or a .gguf (default: "
                    "the default model's F32 copy)")  # fmt: skip
    ap.add_argument("--draft", type=model_arg, help="default, qwen2.5-coder-0.5b or a .gguf (default: the "
                    "default model; with --target, required)")  # fmt: skip
    args = ap.parse_args()
    if args.target and not args.draft:
        ap.error("--target needs --draft: a smaller model of its vocabulary (e.g. qwen2.5-coder-0.5b)")
    args.draft = args.draft or default_model_path()
    draft = args.draft
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        target = args.target or rewritten(draft, "F32", Path(tmp))
        pair = (f"target `{target.name}`, draft model `{draft.name}`" if args.target else
                f"target `{draft.stem}-F32.gguf` (the default model's F32 copy), draft model `{draft.name}` (the "
                "default model: same vocabulary, a sixth of the bytes)")  # fmt: skip
        opts = LoadOptions(n_ctx=2048, n_threads=args.threads, probe=False)
        paired_opts = dataclasses.replace(opts, draft_model=str(draft))
        with Engine(target, opts) as alone, Engine(target, paired_opts) as paired:
            try:
                for engine in (alone, paired):  # loads the draft model: a first turn's cost, not a speed
                    run_task(engine, "Hi", DRAFT_AUTO, 4)
            except EdgeLLMError as err:  # e.g. a draft model of another vocabulary
                raise SystemExit(f"bench_draft_model: {err}") from None
            runs = {"plain": (alone, DRAFT_OFF), "lookup": (alone, DRAFT_AUTO), "draft model": (paired, DRAFT_AUTO)}
            for name in args.tasks:
                kind, prompt = TASKS[name]
                tps: dict[str, list[float]] = {m: [] for m in MODES}
                kept: list[float] = []
                parted: set[str] = set()
                for i in range(args.repeats):
                    order = MODES[i % 3:] + MODES[: i % 3]
                    got = {m: run_task(runs[m][0], prompt, runs[m][1], args.tokens) for m in order}
                    for m in MODES:
                        tps[m].append(got[m][0])
                    kept.append(got["draft model"][3])
                    parted |= {parting(runs[m][0], prompt, got["plain"][2], got[m][2]) for m in MODES[1:]} - {""}
                    print(f"{name} {i + 1}/{args.repeats}: " + ", ".join(f"{m} {got[m][0]:.1f} tok/s" for m in MODES)
                          + f", draft model's drafts kept {kept[-1]:.0%}", flush=True)  # fmt: skip
                rows.append(f"| {name} ({kind}) | " + " | ".join(f"{statistics.median(tps[m]):.1f}" for m in MODES)
                            + f" | {ratio(tps, 'lookup')} | {ratio(tps, 'draft model')} | "
                            f"{statistics.median(kept):.0%} | {', '.join(sorted(parted)) or 'yes'} |")  # fmt: skip
    table = (
        f"## Draft model vs lookup vs plain decoding{': a real pair' if args.target else ''}\n\n"
        f"`python -m bench.bench_draft_model {' '.join(sys.argv[1:])}` — {machine()}; {args.threads} threads, "
        f"greedy, n_ctx 2048; {pair}; `--draft auto` in both drafting modes (the draft model "
        "drafts only where lookup finds nothing). Each repeat runs the three modes back to back in rotating "
        f"order; speed-ups are medians of the per-repeat ratios to plain decoding (range); {load_average()}.\n\n"
        "| task | plain tok/s | lookup tok/s | draft model tok/s | lookup speed-up | draft model speed-up | "
        "draft model's drafts kept | same tokens |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("draft_model_pair" if args.target else "draft_model", table)
    print(table)


if __name__ == "__main__":
    report.run(main)
