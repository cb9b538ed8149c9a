"""Lookup decoding replayed: what `--draft auto` would gain on recorded answers, against the best
any choice of lengths for plain n-gram drafts could do (an oracle that knows the answer), on this
machine's batch costs, and against drafts that are always right (the ceiling those costs set).
`auto` can beat that oracle on code with a rename: it follows the copy
across edits and drafts the new name (edgellm.runtime.lookup, "Copies with edits").

Greedy answers do not depend on drafting, so one recorded answer per task (bench_lookup's tasks)
and a table of what verifying a batch of b tokens costs here (llama_decode with logits for every
row, plus sampling every row, against one token) replay any policy exactly and without noise:
`auto` (edgellm.runtime.lookup, as the engine runs it, three turns in a row) and the oracle
(dynamic programming over draft lengths). This is how auto's priors were tuned; the wall-clock
truth is bench_lookup. Per-token work outside the decode (text pieces, the caller) is left out,
so real speed-ups are somewhat lower.

    .venv/bin/python -m bench.replay_lookup [--model default|qwen2.5-coder-1.5b|PATH] [--f16] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import llama_cpp

from bench import report
from bench.bench_gpu_precision import with_f16_copy
from bench.bench_lookup import TASKS
from bench.models import model_arg
from edgellm.commands.options import number
from edgellm.runtime import lookup
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams, default_threads

SIZES = range(1, lookup.MAX_DRAFT + 2)


def batch_costs(engine: Engine, repeats: int = 5) -> dict[int, float]:
    """Batch size -> seconds of a verified batch (decode + sampling every row) / a one-token step."""
    batch = llama_cpp.llama_batch_init(lookup.MAX_DRAFT + 1, 0, 1)
    sampler = engine._sampler(SamplingParams(temperature=0))
    context = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 8, add_special=True)
    engine.reset()
    engine._decode(context)
    start, seconds = len(engine._cached), {b: [] for b in SIZES}
    try:
        for _ in range(repeats):
            for b in SIZES:
                began = time.perf_counter()
                engine._verify(batch, context[:b])
                for row in range(b):
                    llama_cpp.llama_sampler_sample(sampler, engine._ctx, row)
                seconds[b].append(time.perf_counter() - began)
                engine._truncate(start)
    finally:
        llama_cpp.llama_sampler_free(sampler)
        llama_cpp.llama_batch_free(batch)
    one = statistics.median(seconds[1])
    return {b: statistics.median(s) / one for b, s in seconds.items()}


def accepted(drafts: list[int], answer: list[int], pos: int) -> int:
    m = 0
    while m < len(drafts) and pos + m < len(answer) and drafts[m] == answer[pos + m]:
        m += 1
    return m


def replay_auto(prompt: list[int], answer: list[int], costs: dict[int, float], learned: lookup.BatchCosts) -> float:
    """Speed-up of `auto` over plain decoding on one recorded answer (``learned``: the engine's
    batch costs, carried from turn to turn as the engine does)."""
    drafter = lookup.LookupDrafter(lookup.DRAFT_AUTO, learned)
    drafter.extend([*prompt, answer[0]])
    pos, total = 1, 0.0
    while pos < len(answer):
        drafts = drafter.draft(len(answer) - pos)
        m = accepted(drafts, answer, pos)
        total += costs[len(drafts) + 1]
        learned.record(len(drafts) + 1, costs[len(drafts) + 1] * learned.one)
        drafter.result(len(drafts), m)
        drafter.extend(answer[pos : pos + m + 1])
        pos += m + 1
    return (len(answer) - 1) / total


def oracle(prompt: list[int], answer: list[int], costs: dict[int, float]) -> float:
    """The best speed-up any choice of draft lengths gets from n-gram lookup drafts."""
    n = len(answer)
    best = [0.0] * (n + 1)
    for pos in range(n - 1, 0, -1):
        drafter = lookup.LookupDrafter(lookup.MAX_DRAFT)
        drafter.extend([*prompt, *answer[:pos]])
        drafts = drafter.draft(n - pos)
        m = accepted(drafts, answer, pos)
        best[pos] = min(costs[k + 1] + best[min(pos + min(m, k) + 1, n)] for k in range(len(drafts) + 1))
    return (n - 1) / best[1]


def ceiling(n: int, costs: dict[int, float]) -> float:
    """The speed-up of drafts that are always right (lengths chosen at best): what this machine's
    batch costs allow on an answer of n tokens, whatever the drafter."""
    best = [0.0] * (n + 1)
    for pos in range(n - 1, 0, -1):
        best[pos] = min(costs[k + 1] + best[pos + k + 1] for k in range(min(lookup.MAX_DRAFT, n - 1 - pos) + 1))
    return (n - 1) / best[1]


def measure(path: Path, threads: int) -> list[str]:
    rows = []
    with Engine(path, LoadOptions(n_ctx=2048, n_threads=threads, probe=False)) as engine:
        costs = batch_costs(engine)
        answers = {}
        for name, (_, prompt) in TASKS.items():
            engine.reset()
            messages = [{"role": "user", "content": prompt}]
            turn = engine.chat(messages, SamplingParams(temperature=0, max_tokens=256, draft=lookup.DRAFT_OFF))
            "".join(turn)
            answers[name] = (engine.prompt_tokens(messages), turn.tokens)
    learned = lookup.BatchCosts(one=1.0)
    auto: dict[str, list[float]] = {}
    for _ in range(3):  # as bench_lookup: the tasks in turn, the engine's batch costs kept
        for name, (prompt, answer) in answers.items():
            auto.setdefault(name, []).append(replay_auto(prompt, answer, costs, learned))
    curve = ", ".join(f"{b}: {costs[b]:.2f}" for b in (2, 4, 8, 12, 17))
    for name, (prompt, answer) in answers.items():
        best = oracle(prompt, answer, costs)
        rows.append(f"| {path.name} | {name} ({TASKS[name][0]}) | {len(answer)} | "
                    f"{statistics.median(auto[name]):.2f}x | {best:.2f}x | {ceiling(len(answer), costs):.2f}x | "
                    f"{curve} |")  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=model_arg, default="default", help="default, qwen2.5-coder-1.5b or a .gguf")
    ap.add_argument("--f16", action="store_true", help="also the model's F16 copy (the larger test model)")
    ap.add_argument("--threads", type=number(int, 1), default=default_threads())
    args = ap.parse_args()
    with with_f16_copy(args.model, args.f16) as models:
        rows = [row for model in models for row in measure(model, args.threads)]
    print(f"{args.threads} threads; batch cost = a verified batch of b tokens against one token\n")
    print("| model | task | answer tokens | auto (replayed) | best n-gram drafts | drafts always right "
          "| batch cost b: x |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    report.run(main)
