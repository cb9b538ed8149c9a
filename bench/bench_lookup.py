"""Lookup decoding (`--draft auto`) against plain decoding (`--draft off`): generation tok/s on
copy-heavy tasks (return code with one change: a rename in two short functions, one value in a
33-line module; quote and fix a paragraph) and on free writing.

Greedy, same prompt, same engine; within each repeat the two modes run back to back in alternating
order, so that load from other work on the machine hits both; the ratio is the median of the
per-repeat ratios. The answers of the two modes are compared token for token (must be equal).
Models: the default model, with --f16 also a larger copy of it (its weights dequantized to F16 by
llama.cpp, 2.5x the bytes), and any --model: `qwen2.5-coder-1.5b` is a real larger model that returns
code as asked (bench/models.py fetches it). Writes the `lookup` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_lookup [--model default|qwen2.5-coder-1.5b|PATH ...] [--f16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import report
from bench.models import model_arg, with_copies
from bench.report import load_average, machine, write_section
from edgellm.commands.options import number
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams, default_threads
from edgellm.runtime.lookup import DRAFT_AUTO, DRAFT_OFF

CODE = '''def mean(values):
    total = 0
    for v in values:
        total += v
    return total / len(values)


def variance(values):
    m = mean(values)
    total = 0
    for v in values:
        total += (v - m) ** 2
    return total / len(values)
'''
MODULE = '''import json
import time
from pathlib import Path


class Cache:
    """A small file-backed cache whose entries expire."""

    def __init__(self, path, ttl=3600):
        self.path = Path(path)
        self.ttl = ttl
        self.items = {}
        if self.path.exists():
            self.items = json.loads(self.path.read_text())

    def get(self, key, default=None):
        item = self.items.get(key)
        if item is None:
            return default
        value, stamp = item
        if time.time() - stamp > self.ttl:
            del self.items[key]
            return default
        return value

    def put(self, key, value):
        self.items[key] = (value, time.time())
        self.save()

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.items))
        tmp.replace(self.path)
'''
PARAGRAPH = (
    "The library opens at nine in the morning and closes at six in the evening. Visitors can borrow "
    "up to five books at a time, and each book may be kept for three weeks. Late returns cost ten "
    "cents per day. The reading room on the second floor is quiet and has free wifi."
)
TASKS = {  # name -> (kind, prompt)
    "code": ("copy", f"Return this code with `total` renamed to `acc`, nothing else:\n\n{CODE}"),
    "module": ("copy", f"Return this module with the default ttl changed from 3600 to 600, nothing else:\n\n{MODULE}"),
    "quote": ("copy", f"Repeat this paragraph exactly, then fix any mistake in it:\n\n{PARAGRAPH}"),
    "free": ("free", "Write a short story about a robot who learns to paint."),
}
TARGETS = {"copy": 1.5, "free": 0.97}


def parted_at(plain: list[int], other: list[int]) -> int | None:
    """The first token where two answers differ (None: equal)."""
    if plain == other:
        return None
    return next((i for i, (a, b) in enumerate(zip(plain, other, strict=False)) if a != b), min(len(plain), len(other)))


def sampled_logits(engine: Engine, prompt: str, answer: list[int], at: int) -> np.ndarray:
    """The logits greedy decoding chose ``answer[at]`` from (the prompt and the answer before it
    evaluated in one batch), after the repeat penalty on the answer's last tokens as llama.cpp's
    penalties sampler applies it: where two answers part, how near a tie the top two were."""
    context = engine.prompt_tokens([{"role": "user", "content": prompt}])
    engine.reset()
    row = engine.logits([*context, *answer[:at]], first=len(context) + at - 1)[-1]
    params = SamplingParams()
    for t in set(answer[max(0, at - params.repeat_last_n) : at]):
        row[t] = row[t] / params.repeat_penalty if row[t] > 0 else row[t] * params.repeat_penalty
    return row


def parting(engine: Engine, prompt: str, plain: list[int], other: list[int]) -> str:
    """"" where the answers are equal, else where they part and how far apart the two tokens were
    there (batch rows are not bit-exact on every weight type and context length: a near tie may go
    either way; edgellm.runtime.lookup, "Exactness")."""
    at = parted_at(plain, other)
    if at is None:
        return ""
    if at >= min(len(plain), len(other)):
        return f"**parted at token {at}** (one answer ended)"
    row = sampled_logits(engine, prompt, plain, at)
    return f"**parted at token {at}** (its two tokens {abs(row[plain[at]] - row[other[at]]):.2f} apart)"


def run_task(engine: Engine, prompt: str, draft: int, tokens: int) -> tuple[float, float, list[int], float]:
    """(wall-clock generation tok/s, tok/s per CPU second after the first token, tokens, drafts kept)."""
    engine.reset()
    turn = engine.chat([{"role": "user", "content": prompt}], SamplingParams(temperature=0, max_tokens=tokens,
                                                                           draft=draft))
    pieces = iter(turn)
    next(pieces, None)
    cpu0 = time.process_time()
    for _ in pieces:
        pass
    cpu = time.process_time() - cpu0
    return turn.stats.generation_tps, (turn.stats.generated_tokens - 1) / cpu, turn.tokens, turn.stats.acceptance_rate


def measure(path: Path, args: argparse.Namespace) -> list[str]:
    rows = []
    with Engine(path, LoadOptions(n_ctx=2048, n_threads=args.threads, probe=False)) as engine:
        for name, (kind, prompt) in TASKS.items():
            plain, auto, ratios, cpu_ratios, accept = [], [], [], [], []
            parted: set[str] = set()
            for i in range(args.repeats):
                order = (DRAFT_OFF, DRAFT_AUTO) if i % 2 == 0 else (DRAFT_AUTO, DRAFT_OFF)
                got = {draft: run_task(engine, prompt, draft, args.tokens) for draft in order}
                plain.append(got[DRAFT_OFF][0])
                auto.append(got[DRAFT_AUTO][0])
                accept.append(got[DRAFT_AUTO][3])
                ratios.append(auto[-1] / plain[-1])
                cpu_ratios.append(got[DRAFT_AUTO][1] / got[DRAFT_OFF][1])
                parted |= {parting(engine, prompt, got[DRAFT_OFF][2], got[DRAFT_AUTO][2])} - {""}
                print(f"{path.name} {name} {i + 1}/{args.repeats}: off {plain[-1]:.1f} tok/s, "
                      f"auto {auto[-1]:.1f} tok/s (CPU time {cpu_ratios[-1]:.2f}x), drafts kept {accept[-1]:.0%}",
                      flush=True)
            ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
            rows.append(
                f"| {path.name} | {name} ({kind}) | {statistics.median(plain):.1f} | {statistics.median(auto):.1f} | "
                f"**{ratio:.2f}x** ({min(ratios):.2f}-{max(ratios):.2f}) | {cpu_ratio:.2f}x | >= {TARGETS[kind]}x | "
                f"{statistics.median(accept):.0%} | {', '.join(sorted(parted)) or 'yes'} |"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=model_arg, action="append",
                    help="default, qwen2.5-coder-1.5b or a .gguf (repeatable)")  # fmt: skip
    ap.add_argument("--f16", action="store_true", help="also each model's F16 copy")
    ap.add_argument("--repeats", type=number(int, 1), default=5)
    ap.add_argument("--tokens", type=number(int, 1), default=256, help="longest answer (module: ~200 tokens)")
    ap.add_argument("--threads", type=number(int, 1), default=default_threads())
    args = ap.parse_args()
    with with_copies(args.model, args.f16) as models:
        rows = [row for model in models for row in measure(model, args)]
    table = (
        "## Lookup decoding vs plain decoding\n\n"
        f"`python -m bench.bench_lookup {' '.join(sys.argv[1:])}`"
        f" — {machine()}; {args.threads} threads, greedy, n_ctx 2048. Each repeat runs `--draft off` and "
        "`--draft auto` back to back in alternating order; speed-up = median of the per-repeat ratios (range) of "
        "wall-clock generation tok/s; *CPU* = the same ratio per CPU second the process used after the first "
        f"token (steadier when other work takes the cores); {load_average()}: single numbers swing, the paired "
        "ratios less.\n\n"
        "| model | task | off tok/s | auto tok/s | speed-up (range) | CPU | target | drafts kept | same tokens |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("lookup", table)
    print(table)


if __name__ == "__main__":
    report.run(main)
