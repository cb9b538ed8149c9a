"""Reopening a long chat: time to first token with its KV cache restored from disk (edgellm.runtime.kv_store)
against evaluating the whole prompt, as plain llama.cpp front ends do.

A ~2,000-token conversation (the bundled English text as a document the user pasted, an answer,
a new question) is closed (its KV cache saved) and reopened. Within each repeat the two ways run
back to back in alternating order on the same engine, the KV cache cleared before each; the ratio
is the median of the per-repeat ratios. The two answers are compared token for token (must be
equal). The saved file is read from the page cache (a chat reopened soon after it was closed); a
cold read adds its size over the disk's read speed. Writes the `reopen` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_reopen [--model default|qwen2.5-coder-1.5b|PATH ...] [--f16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from bench.models import model_arg, with_copies
from bench.report import load_average, machine, write_section
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams, default_threads
from edgellm.runtime.kv_store import KVStore
from edgellm.units import human_bytes

TARGET = 0.15
ANSWER = SamplingParams(temperature=0, max_tokens=8, draft=0)


def conversation(engine: Engine, n_tokens: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(the chat as closed, the chat reopened with a new question), the first about ``n_tokens`` long."""
    text = (resources.files("edgellm") / "data" / "eval_en.txt").read_text(encoding="utf-8")
    words = text.split()
    document = " ".join(words[: int(n_tokens * 0.7)])
    while len(engine.tokenize(document)) > n_tokens - 60:
        document = document[: int(len(document) * 0.95)]
    closed = [
        {"role": "user", "content": f"Here is a document:\n\n{document}\n\nRead it; I will ask questions."},
        {"role": "assistant", "content": "I have read the document. What would you like to know?"},
    ]
    return closed, [*closed, {"role": "user", "content": "What is the document about, in one sentence?"}]


def ttft(engine: Engine, messages: list[dict[str, str]]) -> tuple[float, list[int], int]:
    engine.reset()
    t0 = time.perf_counter()
    turn = engine.chat(messages, ANSWER)
    pieces = iter(turn)
    next(pieces)
    seconds = time.perf_counter() - t0
    for _ in pieces:
        pass
    return seconds, turn.tokens, turn.stats.restored_tokens


def measure(path: Path, args: argparse.Namespace, folder: Path) -> str:
    store = KVStore(folder / path.stem)
    with Engine(path, LoadOptions(n_ctx=4096, n_threads=args.threads, probe=False)) as engine:
        closed, reopened = conversation(engine, args.prompt_tokens)
        engine.kv_store = store
        engine.reset()
        engine.chat(closed, ANSWER).result()
        assert engine.save_state()
        size = store.usage()
        full, restored, ratios = [], [], []
        same = True
        for i in range(args.repeats):
            got = {}
            for way in (("full", "disk") if i % 2 == 0 else ("disk", "full")):
                engine.kv_store = store if way == "disk" else None
                got[way] = ttft(engine, reopened)
            assert got["disk"][2] > 0 and got["full"][2] == 0
            full.append(got["full"][0])
            restored.append(got["disk"][0])
            ratios.append(restored[-1] / full[-1])
            same &= got["full"][1] == got["disk"][1]
            print(f"{path.name} {i + 1}/{args.repeats}: full {full[-1] * 1000:.0f} ms, "
                  f"restored {restored[-1] * 1000:.0f} ms", flush=True)
        n_prompt = len(engine.prompt_tokens(reopened))
    ratio = statistics.median(ratios)
    return (
        f"| {path.name} | {n_prompt} | {statistics.median(full) * 1000:.0f} | "
        f"{statistics.median(restored) * 1000:.0f} | "
        f"**{ratio:.3f}x** ({min(ratios):.3f}-{max(ratios):.3f}) | <= {TARGET}x | {human_bytes(size)} | "
        f"{'yes' if same else '**NO**'} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=model_arg, action="append",
                    help="default, qwen2.5-coder-1.5b or a .gguf (repeatable)")  # fmt: skip
    ap.add_argument("--f16", action="store_true", help="also each model's F16 copy")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, with_copies(args.model, args.f16) as models:
        rows = [measure(model, args, Path(tmp)) for model in models]
    table = (
        "## Reopening a chat: KV cache restored from disk vs full prompt evaluation\n\n"
        f"`python -m bench.bench_reopen {' '.join(sys.argv[1:])}` — {machine()}; {args.threads} threads, n_ctx 4096. "
        "Time to first "
        "token of the reopened chat's next answer; each repeat runs both ways back to back in alternating order, "
        "ratio = median of the per-repeat ratios (range). The saved file is read from the page cache; "
        f"{load_average()}.\n\n"
        "| model | prompt tokens | full evaluation ms | restored ms | ratio (range) | target | file | same tokens |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("reopen", table)
    print(table)


if __name__ == "__main__":
    main()
