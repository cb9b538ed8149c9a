"""Computing an importance matrix: calibration text through the float model, chunk by chunk,
with the collector on llama.cpp's graph callback.

Chunking is llama-imatrix's (`compute_imatrix`): the text is tokenized once (BOS added if the
model adds one, special tokens not parsed; NFC-normalized first for Qwen, as `edgellm eval` and
Qwen's own tokenizer do, where llama-imatrix takes the bytes as they are), cut into consecutive
chunks of n_ctx tokens (the tail that does not fill one is dropped), and each chunk is
evaluated as a fresh sequence (KV cache cleared) whose first token becomes BOS when the
vocabulary adds one. Every position asks
for logits, as there: otherwise llama.cpp drops the positions nobody reads before the last
layer's feed-forward and that layer's matrices would see one row. One chunk is one batch, so
memory is the model plus one chunk's activations and logits."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime.chunks import chunk_tokens
from edgellm.runtime.engine import Engine, LoadOptions
from quantize.imatrix.collect import Collector
from quantize.imatrix.files import Imatrix

DEFAULT_CTX = 512  # llama-imatrix's default chunk

# Called after each chunk with (chunks done, chunks in all, tokens done, seconds so far).
OnChunk = Callable[[int, int, int, float], None]


@dataclass(frozen=True)
class Plan:
    """What to compute on: the calibration text (and its name for the file), the chunking."""

    name: str
    text: str
    n_ctx: int = DEFAULT_CTX
    max_chunks: int | None = None
    threads: int | None = None
    process_output: bool = False
    ctx_option: str | None = "--ctx"  # the option that sets n_ctx, for the too-short-text error


def compute(model: Path, plan: Plan, on_chunk: OnChunk | None = None) -> Imatrix:
    """The importance matrix of the float GGUF ``model`` over ``plan``'s text."""
    collector = Collector(process_output=plan.process_output)
    callback = collector.callback
    options = LoadOptions(n_ctx=plan.n_ctx, n_batch=plan.n_ctx, n_threads=plan.threads, eval_callback=callback)
    with Engine(model, options) as engine:
        text = unicodedata.normalize("NFC", plan.text) if engine.normalize_nfc else plan.text
        tokens = engine.tokenize(text, add_special=True, parse_special=False)
        added = engine.tokenize("", add_special=True, parse_special=False)
        chunks = chunk_tokens(tokens, plan.n_ctx, plan.max_chunks, added[0] if added else None, what=plan.name,
                              option="--calibration text", ctx_option=plan.ctx_option)
        t0, done = time.perf_counter(), 0
        for i, chunk in enumerate(chunks):
            engine.reset()
            engine.logits(chunk, keep=False)  # every position an output (see the module docstring), none kept
            collector.check()
            done += len(chunk)
            if on_chunk:
                on_chunk(i + 1, len(chunks), done, time.perf_counter() - t0)
    if not collector.entries:
        raise EdgeLLMError(f"{model}: no matrix multiplication of a model weight was seen; nothing to save")
    entries = collector.entries
    for e in entries.values():
        e.sums = e.sums.astype(np.float32)
    return Imatrix(entries, [plan.name], chunk_count=len(chunks), chunk_size=plan.n_ctx)


def chunk_progress(label: str = "imatrix") -> OnChunk:
    """Progress on stderr: chunk, tokens per second and ETA (one line per chunk off a terminal)."""
    live = sys.stderr.isatty()

    def show(done: int, total: int, tokens: int, seconds: float) -> None:
        rate = tokens / seconds if seconds > 0 else 0.0
        eta = seconds / done * (total - done)
        line = f"{label}: chunk {done}/{total}  {rate:,.0f} tok/s  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        end = "\n" if not live or done == total else ""
        print(f"\r{line}\x1b[K" if live else line, end=end, file=sys.stderr, flush=True)

    return show
