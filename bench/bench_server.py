"""`edgellm serve` under 1, 2, 4 and 8 concurrent streaming clients, against a bare multi-sequence
llama_decode loop on the same model and threads, and against llama.cpp's own llama-server (built
from the llama.cpp vendored in the pinned llama-cpp-python sdist: bench/llama_tools.py).

Every client is the real `openai` package streaming /v1/completions with a counting prompt (so
every request generates exactly --tokens tokens). Aggregate tok/s = tokens after each stream's
first / (last token of any stream - first token of any stream); per-stream tok/s the same per
stream; the bare loop is timed the same way (after prefill). Each repeat runs every system twice
at each level in mirrored order (A B C ... C B A), so load that drifts hits all of them alike;
medians over repeats are reported. Then the time to first token
of a request that arrives while 3 others stream, against the same request alone.
Writes the `server` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_server [--threads 2] [--tokens 96] [--repeats 3] [--levels 1,2,4,8]
        [--llama-server PATH|auto|none]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import llama_cpp
import openai

from bench.report import load_average, machine, write_section
from edgellm.models.default_model import default_model_path
from edgellm.runtime.engine import Engine, LoadOptions

CTX_PER_SEQ = 512


def prompt(k: int) -> str:
    """Stream k counts on from its own number: the model keeps counting, never stops early."""
    start = 10 + 7 * k
    return ", ".join(str(n) for n in range(start, start + 10)) + ","


# -- the bare loop -----------------------------------------------------------------------------
def bare_loop(path: Path, streams: int, tokens: int, threads: int) -> float:
    """Aggregate tok/s of the plainest multi-sequence loop: one context with ``streams``
    sequences (unified KV, as the server has), prompts in one batch, then per step one
    llama_decode of one token per sequence and a greedy llama.cpp sampler per sequence."""
    opts = LoadOptions(n_ctx=CTX_PER_SEQ * streams, n_threads=threads, n_seq=streams, probe=False)
    with Engine(path, opts) as eng:
        ctx = eng._ctx
        prompts = [eng.tokenize(prompt(k), add_special=eng._add_bos) for k in range(streams)]
        batch = llama_cpp.llama_batch_init(sum(map(len, prompts)), 0, 1)
        samplers = []
        for _ in range(streams):
            chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            samplers.append(chain)
        try:
            n, rows = 0, []
            for seq, toks in enumerate(prompts):
                for pos, tok in enumerate(toks):
                    batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.seq_id[n][0] = tok, pos, 1, seq
                    batch.logits[n] = pos == len(toks) - 1
                    n += 1
                rows.append(n - 1)
            batch.n_tokens = n
            llama_cpp.llama_decode(ctx, batch)
            last = [llama_cpp.llama_sampler_sample(samplers[s], ctx, rows[s]) for s in range(streams)]
            t0 = time.perf_counter()
            for step in range(tokens - 1):
                for s in range(streams):
                    batch.token[s], batch.pos[s] = last[s], len(prompts[s]) + step
                    batch.n_seq_id[s], batch.seq_id[s][0], batch.logits[s] = 1, s, True
                batch.n_tokens = streams
                llama_cpp.llama_decode(ctx, batch)
                last = [llama_cpp.llama_sampler_sample(samplers[s], ctx, s) for s in range(streams)]
            return streams * (tokens - 1) / (time.perf_counter() - t0)
        finally:
            for chain in samplers:
                llama_cpp.llama_sampler_free(chain)
            llama_cpp.llama_batch_free(batch)


# -- servers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    name: str
    url: str  # .../v1
    model: str
    proc: subprocess.Popen


def wait_ready(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not get ready")


@contextlib.contextmanager
def edgellm_server(path: Path, slots: int, threads: int, interval_ms: int | None = None) -> Iterator[Served]:
    """``interval_ms``: --stream-interval (None: the default)."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgellm", "serve", str(path), "--port", str(port), "--parallel", str(slots),
           "--ctx", str(CTX_PER_SEQ), "--threads", str(threads)]  # fmt: skip
    if interval_ms is not None:
        cmd += ["--stream-interval", str(interval_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc, "edgellm serve")
        name = "edgellm serve" if interval_ms is None else f"edgellm serve --stream-interval {interval_ms}"
        yield Served(name, url, path.stem, proc)
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def llama_server(binary: Path, path: Path, slots: int, threads: int) -> Iterator[Served]:
    port = free_port()
    cmd = [str(binary), "-m", str(path), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
           "-c", str(CTX_PER_SEQ * slots), "-t", str(threads), "-tb", str(threads), "--kv-unified"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc, "llama-server")
        yield Served("llama-server", url, path.stem, proc)
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def llama_cpp_python_server(path: Path, threads: int) -> Iterator[Served]:
    """llama-cpp-python's own server: one request at a time behind a lock; with
    ``--interrupt_requests False`` a new request waits instead of cutting the running stream short."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--port", str(port), "--n_ctx",
           str(CTX_PER_SEQ), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--interrupt_requests", "False"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc, "llama-cpp-python's server")
        yield Served("llama-cpp-python server", url, str(path), proc)
    finally:
        proc.terminate()
        proc.wait(30)


# -- load --------------------------------------------------------------------------------------
@dataclass
class StreamTimes:
    sent: float
    first: float = 0.0
    last: float = 0.0
    tokens: int = 0


def one_stream(client: openai.OpenAI, model: str, k: int, tokens: int, times: StreamTimes,
               started: threading.Event | None = None) -> None:  # fmt: skip
    stream = client.completions.create(model=model, prompt=prompt(k), max_tokens=tokens, temperature=0, stream=True,
                                       stream_options={"include_usage": True})  # fmt: skip
    chunks = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            now = time.perf_counter()
            times.first = times.first or now
            times.last = now
            chunks += 1
            if started is not None:
                started.set()
        if chunk.usage:
            times.tokens = chunk.usage.completion_tokens
    times.tokens = times.tokens or chunks  # a server that sends no usage: one chunk per token


def load(server: Served, streams: int, tokens: int) -> tuple[float, float]:
    """(aggregate tok/s, median per-stream tok/s) of ``streams`` clients at once."""
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
    times = [StreamTimes(time.perf_counter()) for _ in range(streams)]
    threads = [threading.Thread(target=one_stream, args=(client, server.model, k, tokens, times[k]))
               for k in range(streams)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after_first = [t.tokens - 1 for t in times]
    aggregate = sum(after_first) / (max(t.last for t in times) - min(t.first for t in times))
    per_stream = statistics.median(n / (t.last - t.first) for n, t in zip(after_first, times, strict=True))
    return aggregate, per_stream


def ttft_ratio(server: Served, repeats: int) -> tuple[float, float]:
    """(median TTFT alone, median TTFT while 3 others stream), seconds."""
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
    fresh = iter(range(100, 10**6))  # a prompt no cache holds yet, each probe

    def probe() -> float:
        times = StreamTimes(time.perf_counter())
        one_stream(client, server.model, next(fresh), 2, times)
        return times.first - times.sent

    alone = [probe() for _ in range(repeats)]
    busy = []
    for _ in range(repeats):
        events = [threading.Event() for _ in range(3)]
        runners = [threading.Thread(target=one_stream, args=(client, server.model, k, 160,
                                                             StreamTimes(time.perf_counter()), events[k]))
                   for k in range(3)]  # fmt: skip
        for t in runners:
            t.start()
        for e in events:
            e.wait()
        busy.append(probe())
        for t in runners:
            t.join()
    return statistics.median(alone), statistics.median(busy)


BARE = "bare llama_decode loop"


def mirrored(servers: list[Served], n: int, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Each system twice at ``n`` streams, in the order A B C ... C B A: a load that drifts during
    the round hits every system alike on average (a single pass favours whoever runs in the quiet
    part). Returns each system's mean (aggregate, per-stream) tok/s."""
    systems: list[Served | None] = [None, *servers]  # None: the bare loop
    got: dict[str, list[tuple[float, float]]] = {}
    for system in systems + systems[::-1]:
        if system is None:
            bare = bare_loop(args.model, n, args.tokens, args.threads)
            got.setdefault(BARE, []).append((bare, bare / n))
        else:
            got.setdefault(system.name, []).append(load(system, n, args.tokens))
    return {name: (statistics.fmean(a for a, _ in runs), statistics.fmean(p for _, p in runs))
            for name, runs in got.items()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=96, help="generated tokens per request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levels", default="1,2,4,8", help="concurrent streams, comma-separated")
    ap.add_argument("--llama-server", default="auto",
                    help="llama-server binary, `auto` (build it with bench/llama_tools.py) or `none`")
    ap.add_argument("--no-llama-cpp-python", action="store_true", help="skip llama-cpp-python's own server")
    ap.add_argument("--no-every-token", action="store_true", help="skip edgellm serve --stream-interval 0")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    slots = max(levels)
    binary = None
    if args.llama_server == "auto":
        from bench.llama_tools import build

        binary = build(["llama-server"])["llama-server"]
    elif args.llama_server != "none":
        binary = Path(args.llama_server)

    results: dict[str, dict[int, list[tuple[float, float]]]] = {}
    ttft: dict[str, tuple[float, float]] = {}
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(edgellm_server(args.model, slots, args.threads))]
        if not args.no_every_token:  # the same server sending every token on its own
            servers.append(stack.enter_context(edgellm_server(args.model, slots, args.threads, interval_ms=0)))
        if binary is not None:
            servers.append(stack.enter_context(llama_server(binary, args.model, slots, args.threads)))
        if not args.no_llama_cpp_python:
            servers.append(stack.enter_context(llama_cpp_python_server(args.model, args.threads)))
        for s in servers:  # warm-up: page in the weights, fill the caches
            load(s, 1, 8)
        for rep in range(args.repeats):
            for n in levels:
                line = [f"repeat {rep + 1}, {n} streams:"]
                for name, (agg, per) in mirrored(servers, n, args).items():
                    results.setdefault(name, {}).setdefault(n, []).append((agg, per))
                    line.append(f"{name} {agg:.1f} ({per:.1f}/stream)")
                print(", ".join(line), flush=True)
        for s in servers:
            ttft[s.name] = ttft_ratio(s, args.repeats)
            alone, busy = ttft[s.name]
            print(f"{s.name}: TTFT alone {alone * 1000:.0f} ms, with 3 streams {busy * 1000:.0f} ms")
    text = report(args, levels, results, ttft)
    print(text)
    if not args.no_write:
        write_section("server", text)


def report(args: argparse.Namespace, levels: list[int], results: dict, ttft: dict) -> str:
    med = {name: {n: (statistics.median(a for a, _ in runs), statistics.median(p for _, p in runs))
                  for n, runs in by_level.items()} for name, by_level in results.items()}  # fmt: skip

    def ratio(ours: str, theirs: str, n: int) -> str:
        """Median of the per-repeat ratios (each repeat ran both back to back), with their range."""
        each = [a / b for (a, _), (b, _) in zip(results[ours][n], results[theirs][n], strict=True)]
        return f"**{statistics.median(each):.2f}x** ({min(each):.2f}-{max(each):.2f})"

    head = "| | " + " | ".join(f"{n} stream{'s' * (n > 1)}" for n in levels) + " |\n|---|" + "---|" * len(levels)
    rows = [f"| {name}: aggregate (per stream) tok/s | "
            + " | ".join(f"{by[n][0]:.0f} ({by[n][1]:.0f})" for n in levels) + " |" for name, by in med.items()]
    ours = [name for name in med if name.startswith("edgellm serve")]
    for theirs in (BARE, "llama-server", "llama-cpp-python server"):
        if theirs in med:
            rows += [f"| {name} / {theirs.removesuffix(' llama_decode loop')} | "
                     + " | ".join(ratio(name, theirs, n) for n in levels) + " |" for name in ours]
    ttft_lines = "\n".join(f"- {name}: first token alone {a * 1000:.0f} ms, while 3 others stream {b * 1000:.0f} ms "
                           f"(**{b / a:.2f}x**)" for name, (a, b) in ttft.items())  # fmt: skip
    cmd = " ".join(sys.argv[1:])
    return (
        "## `edgellm serve`: concurrent streams\n\n"
        f"`python -m bench.bench_server {cmd}` — {machine()}; model `{args.model.name}`, {args.threads} threads, "
        f"{args.tokens} tokens per request, {CTX_PER_SEQ}-token context per sequence, {max(levels)} slots in "
        "edgellm serve and llama-server (llama-cpp-python's server has one, requests wait their turn); "
        f"medians of {args.repeats} repeats, each running every system twice at each level in mirrored order "
        "(A B C ... C B A, the two runs averaged; ratios: median of the per-repeat ratios, range); "
        "clients: the `openai` package streaming /v1/completions, one thread each, on the same machine; "
        f"{load_average()}.\n\n"
        + head + "\n" + "\n".join(rows) + "\n\nTime to first token of a request arriving while 3 others stream "
        "(target: within 2x of alone):\n\n" + ttft_lines + "\n"
    )


if __name__ == "__main__":
    main()
