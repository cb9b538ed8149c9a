"""Generation speed through the Engine against a bare llama-cpp-python decode loop.

Same GGUF, same threads, same prompt, same number of greedy tokens; repeats alternate between
the two so that machine noise hits both. Writes the `engine` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_engine [--model PATH] [--repeats 7] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import llama_cpp

from bench.report import machine, write_section
from edgellm.models.default_model import default_model_path
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams, default_threads

PROMPT = [{"role": "user", "content": "Write a very long essay about the history of Rome."}]


def bare_generation_tps(path: str, prompt: list[int], n_tokens: int, threads: int, n_ctx: int) -> float:
    """The plainest loop llama-cpp-python allows: decode the prompt, then sample+decode greedily."""
    mp = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, 512, 512
    cp.n_threads = cp.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, cp)
    sampler = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(sampler, llama_cpp.llama_sampler_init_greedy())
    arr = (llama_cpp.llama_token * len(prompt))(*prompt)
    llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(prompt)))
    one = (llama_cpp.llama_token * 1)()
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        one[0] = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
        llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1))
    seconds = time.perf_counter() - t0
    llama_cpp.llama_sampler_free(sampler)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return n_tokens / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args()
    n_ctx = 1024
    params = SamplingParams(temperature=0, max_tokens=args.tokens)
    engine_tps, bare_tps = [], []
    with Engine(args.model, LoadOptions(n_ctx=n_ctx, n_threads=args.threads)) as engine:
        prompt = engine.prompt_tokens(PROMPT)
        for i in range(args.repeats):
            engine.reset()
            turn = engine.chat(PROMPT, params)
            turn.result()
            n = turn.stats.generated_tokens
            engine_tps.append(turn.stats.generation_tps)
            bare_tps.append(bare_generation_tps(args.model, prompt, n, args.threads, n_ctx))
            print(f"repeat {i + 1}/{args.repeats}: engine {engine_tps[-1]:.1f} tok/s, bare {bare_tps[-1]:.1f} tok/s "
                  f"({n} tokens)")
    e, b = statistics.median(engine_tps), statistics.median(bare_tps)
    table = (
        "## Engine vs bare llama-cpp-python decode loop\n\n"
        f"`python -m bench.bench_engine --repeats {args.repeats} --tokens {args.tokens}` — {machine()}; "
        f"model `{args.model.rsplit('/', 1)[-1]}`, {args.threads} threads, greedy.\n\n"
        "| loop | median gen tok/s | min | max |\n|---|---|---|---|\n"
        f"| Engine (streamed turn) | {e:.1f} | {min(engine_tps):.1f} | {max(engine_tps):.1f} |\n"
        f"| bare llama_decode loop | {b:.1f} | {min(bare_tps):.1f} | {max(bare_tps):.1f} |\n\n"
        f"Ratio Engine / bare: **{e / b:.3f}x** (target >= 0.98x)."
    )
    write_section("engine", table)
    print(table)


if __name__ == "__main__":
    main()
