"""The memory planner against llama.cpp: estimated vs allocated memory for real loads.

For the default model at several contexts (flash attention on and off) and for tiny models of
other shapes (GQA, MQA, big vocabulary, many heads): the planner's weights + KV cache + compute
estimate, the buffers llama.cpp reports allocating (`... buffer size = X MiB` in its log), and the
process's RSS growth over load + a 256-token prompt (weights are mmapped: their pages count once read).

    python -m bench.bench_planner            # -> docs/benchmarks.md, section "planner"
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from pathlib import Path

import psutil

from bench.report import machine, write_section
from edgellm.models.default_model import default_model_path
from edgellm.runtime import planner
from edgellm.runtime.engine import Engine, LoadOptions
from tests.store.tiny_gguf import write_tiny_llama

MIB = 1 << 20
SHAPES = {
    "tiny GQA 8/2 heads": dict(layers=4, embedding=256, heads=8, kv_heads=2, ffn=512, vocab=1000),
    "tiny 32K vocab": dict(layers=2, embedding=128, heads=4, kv_heads=4, ffn=4096, vocab=32000),
    "tiny MQA 8/1 heads": dict(layers=2, embedding=1024, heads=8, kv_heads=1, ffn=2816, vocab=8000),
}


def measure(path: Path, ctx: int, flash_attn: bool) -> tuple[float, float, float]:
    """(estimated, llama.cpp-reported, RSS growth) in MiB."""
    _, _, est = planner.for_file(path, ctx, flash_attn=flash_attn)
    proc = psutil.Process()
    before = proc.memory_info().rss
    log = io.StringIO()
    with (
        contextlib.redirect_stderr(log),
        Engine(path, LoadOptions(n_ctx=ctx, flash_attn=flash_attn, verbose=True, probe=False)) as engine,
    ):
        engine._decode(engine.tokenize("hello " * 256)[: min(256, ctx - 1)])
        grown = proc.memory_info().rss - before
    reported = sum(
        float(m) for m in re.findall(r"(?:model|KV|compute|output) buffer size =\s+([\d.]+) MiB", log.getvalue())
    )
    return est.total / MIB, reported, grown / MIB


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rows = []
    models = [("SmolLM2-135M Q4_1 (default)", default_model_path())]
    with tempfile.TemporaryDirectory() as tmp:
        models += [
            (name, write_tiny_llama(Path(tmp) / f"{i}.gguf", context=16384, **s))
            for i, (name, s) in enumerate(SHAPES.items())
        ]
        for name, path in models:
            for ctx in (512, 2048, 8192):
                for fa in (False, True):
                    est, real, rss = measure(path, ctx, fa)
                    rows.append(
                        f"| {name} | {ctx} | {'on' if fa else 'off'} | {est:.1f} | {real:.1f} | "
                        f"{(est - real) / real * 100:+.1f}% | {rss:.1f} |"
                    )
    table = "\n".join(rows)
    write_section(
        "planner",
        f"""## Memory planner vs llama.cpp

{machine()}. `python -m bench.bench_planner`. Estimate = weights + KV cache + compute buffers
(edgellm.runtime.planner); allocated = the buffers llama.cpp logs (model + KV + compute + output); RSS growth =
the process over load and a 256-token prompt (mmapped weights count once touched; untouched KV pages do not).

| model | ctx | flash attn | estimate MiB | allocated MiB | error | RSS growth MiB |
|---|---|---|---|---|---|---|
{table}
""",
    )
    print(table)


if __name__ == "__main__":
    main()
