"""What the runner process costs: generation speed and time to first token through the runner
(RemoteEngine) against the in-process Engine, and the extra process's memory.

Same GGUF, threads, prompt and greedy tokens; both are timed from the caller's side (the first
and last piece as the caller receives them, the KV cache reset before each turn so both read
the whole prompt), and repeats alternate between the two so that machine noise hits both.
Writes the `runner` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_runner [--model PATH] [--repeats 9] [--tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psutil

from bench.report import load_average, machine, write_section
from edgellm.models.default_model import default_model_path
from edgellm.runtime.client import RemoteEngine
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams, default_threads
from edgellm.runtime.lookup import DRAFT_OFF
from edgellm.units import human_bytes

PROMPT = [{"role": "user", "content": "Write a very long essay about the history of Rome."}]


def timed_turn(engine: Engine | RemoteEngine, params: SamplingParams) -> tuple[float, float, int]:
    """(time to first piece, generation tok/s after it, tokens), from the caller's side."""
    engine.reset()
    t0 = time.perf_counter()
    turn = engine.chat(PROMPT, params)
    first = last = 0.0
    for _ in turn:
        last = time.perf_counter()
        first = first or last
    n = turn.stats.generated_tokens
    return first - t0, (n - 1) / (last - first), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args()
    options = LoadOptions(n_ctx=1024, n_threads=args.threads)
    # lookup decoding off: each engine's `auto` policy times batches on its own, which is noise here
    params = SamplingParams(temperature=0, max_tokens=args.tokens, draft=DRAFT_OFF)
    me = psutil.Process()
    rss_before = me.memory_info().rss
    remote = RemoteEngine(args.model, options)
    rss_parent_with_runner = me.memory_info().rss
    runner_rss = psutil.Process(remote.runner.proc.pid).memory_info().rss
    local = Engine(args.model, options)
    rss_in_process = me.memory_info().rss - rss_parent_with_runner
    results: dict[str, list[tuple[float, float, int]]] = {"in-process": [], "runner": []}
    timed_turn(local, params), timed_turn(remote, params)  # warm-up
    for i in range(args.repeats):
        pair = [("in-process", local), ("runner", remote)]
        order = pair if i % 2 == 0 else pair[::-1]
        for name, eng in order:
            results[name].append(timed_turn(eng, params))
    remote.close()
    local.close()

    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    tokens = results["runner"][0][2]
    ratios = [r[1] / ip[1] for r, ip in zip(results["runner"], results["in-process"], strict=True)]
    lines = [
        "## The runner process's cost (`bench/bench_runner.py`)",
        "",
        f"`.venv/bin/python -m bench.bench_runner --repeats {args.repeats} --tokens {args.tokens}`; "
        f"model `{os.path.basename(args.model)}`, {args.threads} threads, {tokens} greedy tokens per turn, "
        f"KV cache reset before each turn, lookup decoding off; repeats alternate A/B, medians. {machine()}; "
        f"{load_average()}.",
        "",
        "| | time to first token (ms) | generation tok/s |",
        "|---|---|---|",
        f"| in-process Engine | {med['in-process'][0] * 1000:.1f} | {med['in-process'][1]:.1f} |",
        f"| runner process (RemoteEngine) | {med['runner'][0] * 1000:.1f} | {med['runner'][1]:.1f} |",
        "",
        f"Runner / in-process generation speed: median of per-pair ratios **{statistics.median(ratios):.3f}x** "
        f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)}); time to first token difference "
        f"**{(med['runner'][0] - med['in-process'][0]) * 1000:+.1f} ms**.",
        "",
        f"Memory: the runner process's RSS is {human_bytes(runner_rss)}; the same model loaded in-process adds "
        f"{human_bytes(rss_in_process)} to its caller. The caller without the model (the CLI, the chat app) "
        f"grew by {human_bytes(rss_parent_with_runner - rss_before)} for starting the runner. So the extra "
        f"process costs about {human_bytes(max(runner_rss - rss_in_process, 0))} (a second Python interpreter "
        "with llama-cpp-python imported); the model's weights are mapped once either way.",
    ]
    print("\n".join(lines))
    write_section("runner", "\n".join(lines))


if __name__ == "__main__":
    main()
