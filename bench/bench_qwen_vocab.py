"""Qwen's 151,643-rank vocabulary: how long exporting it takes (ranks → byte-level tokens + merges
re-derived from the ranks; tokenizer.json → GGUF fields), and tokenizer parity of the resulting
GGUF with tiktoken on a large corpus (the Python standard library plus generated multilingual
stress texts). Writes the `qwen-vocab` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_qwen_vocab [--repeat 3] [--stress 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import llama_cpp

from bench.report import machine, write_section
from quantize.vocab.bpe import load_byte_level_hf
from quantize.vocab.tiktoken_bpe import load_tiktoken
from tests.quantize.qwen.fixtures import CORPUS, qwen_tiktoken_path, stress_corpus, tiktoken_encoding
from tests.quantize.qwen.fixtures import write_qwen15_tokenizer as write_tokenizer_json


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median seconds of ``repeat`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def vocab_only_gguf(vocab, path: Path) -> None:  # noqa: ANN001 - quantize.vocab.Vocab
    """Just enough of a `qwen` GGUF for llama.cpp to load its tokenizer (vocab_only)."""
    writer = gguf.GGUFWriter(path, "qwen")
    for add, value in ((writer.add_block_count, 1), (writer.add_context_length, 2048), (writer.add_head_count, 1),
                       (writer.add_embedding_length, 32), (writer.add_feed_forward_length, 64)):  # fmt: skip
        add(value)
    writer.add_layer_norm_rms_eps(1e-6)
    vocab.write(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stress", type=int, default=20000, help="generated stress texts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "qwen.tiktoken").write_bytes(qwen_tiktoken_path().read_bytes())
        write_tokenizer_json(folder)
        t_tiktoken, vocab = timed(lambda: load_tiktoken(folder), args.repeat)
        t_json, json_vocab = timed(lambda: load_byte_level_hf(folder), args.repeat)
        out = folder / "vocab.gguf"
        t_write, _ = timed(lambda: vocab_only_gguf(vocab, out), args.repeat)

        stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
        texts = [*CORPUS, *stress_corpus(args.stress, seed=7)]
        texts += [p.read_text(encoding="utf-8", errors="ignore") for p in stdlib]
        enc = tiktoken_encoding()
        llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
        t0 = time.perf_counter()
        mismatches = sum(
            llm.tokenize(t.encode(), add_bos=False, special=False) != enc.encode_ordinary(t) for t in texts
        )
        t_parity = time.perf_counter() - t0
        llm.close()
    chars = sum(map(len, texts))
    rows = [
        ("qwen.tiktoken → tokens + 151,387 merges (`load_tiktoken`)", f"{t_tiktoken:.2f} s"),
        ("Qwen1.5 tokenizer.json → GGUF fields (`load_byte_level_hf`)", f"{t_json:.2f} s"),
        ("tokenizer fields → GGUF file (gguf.GGUFWriter)", f"{t_write:.2f} s"),
        (
            f"parity with tiktoken: {len(texts):,} texts, {chars / 1e6:.1f} M characters "
            f"({len(stdlib):,} stdlib files + {args.stress:,} stress texts + corpus)",
            f"**{mismatches} mismatches** ({t_parity:.0f} s)",
        ),
    ]
    assert len(json_vocab.merges) == len(vocab.merges)
    table = "\n".join(f"| {what} | {value} |" for what, value in rows)
    write_section(
        "qwen-vocab",
        f"""## Qwen vocabulary export and tokenizer parity

`python -m bench.bench_qwen_vocab` — median of {args.repeat}; {machine()}

| step | result |
|---|---|
{table}
""",
    )
    print(table)


if __name__ == "__main__":
    main()
