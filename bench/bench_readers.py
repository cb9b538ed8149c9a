"""edgellm's own readers against the maintained libraries beside them: the GGUF header reader vs
gguf.GGUFReader on the default model, and the tokenizer.model parser vs protobuf and sentencepiece
on a 55,296-piece model (Chinese-LLaMA's size, built as the tests build it). Medians of interleaved
repeats, so the ratios hold even on a shared machine; the numbers back the two modules' docstrings.

    python -m bench.bench_readers [--repeats N]   # -> docs/benchmarks.md, section "readers"
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from bench.report import machine, write_section


def interleaved(funcs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """name -> median seconds, each round running every function once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            t0 = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def gguf_header_rows(repeats: int) -> list[str]:
    import gguf

    from edgellm.models.default_model import default_model_path
    from edgellm.models.gguf_header import read_header

    path = default_model_path()
    readers = {"edgellm read_header": lambda: read_header(path), "gguf.GGUFReader": lambda: gguf.GGUFReader(path)}
    got = interleaved(readers, repeats)
    return [f"| GGUF header, {path.name} | {name} | {s:.3f} s |" for name, s in got.items()]


def spm_rows(repeats: int) -> list[str]:
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as pb

    from quantize.vocab import spm_model
    from tests.quantize import builders

    data = builders.extend_spm(builders.train_spm(), 55296)

    def processor() -> list[tuple[str, float, bool]]:
        sp = SentencePieceProcessor(model_proto=data)
        return [(sp.id_to_piece(i), sp.get_score(i), sp.is_control(i)) for i in range(sp.get_piece_size())]

    got = interleaved({
        "edgellm spm_model.parse": lambda: spm_model.parse(data),
        "protobuf ModelProto.FromString + pieces": lambda: [(p.piece, p.score, p.type)
                                                            for p in pb.ModelProto.FromString(data).pieces],
        "SentencePieceProcessor + pieces": processor,
    }, repeats)  # fmt: skip
    return [f"| tokenizer.model, 55,296 pieces ({len(data):,} bytes) | {name} | {s:.3f} s |" for name, s in got.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = gguf_header_rows(args.repeats) + spm_rows(args.repeats)
    write_section("readers", "\n".join([
        "## edgellm's own readers vs the libraries beside them",
        "",
        f"Measured {machine()} with `python -m bench.bench_readers --repeats {args.repeats}` (median of "
        f"{args.repeats} interleaved rounds; 1-minute load average {load:.1f} before, {os.getloadavg()[0]:.1f} "
        "after, on 2 cores shared with other jobs: compare within a block, not across runs).",
        "",
        "| input | reader | median |",
        "|---|---|--:|",
        *rows,
    ]))  # fmt: skip
    print("\n".join(rows))


if __name__ == "__main__":
    main()
