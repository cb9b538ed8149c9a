"""`edgellm imatrix MODEL.gguf -o FILE [--calibration TEXT] [--chunks N] [--ctx N]`: only compute an
importance matrix (what llama-imatrix does), for `edgellm quantize --imatrix FILE` or llama.cpp's
own `llama-quantize --imatrix FILE`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from edgellm.commands.options import THREADS, number

    p = sub.add_parser(
        "imatrix",
        help="compute an importance matrix (llama-imatrix's) for weighted 1-4 bit quantization",
        description="Runs calibration text through a float model chunk by chunk and saves, for every matrix "
        "multiplication of a model weight, the mean squared activation of each input column: llama.cpp's "
        "importance matrix, in its GGUF format (or the legacy .dat when FILE ends in .dat).",
    )
    p.add_argument("model", help="an f32/f16/bf16 .gguf (the matrix describes the unquantized model)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to save it (.gguf, or .dat)")
    p.add_argument("--calibration", metavar="TEXT", default=None,
                   help="UTF-8 text file, or bundled (English + Chinese + code, the default), bundled:en, "
                   "bundled:zh, bundled:code or a comma list of them")  # fmt: skip
    p.add_argument("--chunks", type=number(int, 1), default=None, metavar="N",
                   help="use at most N chunks (default: all of the text)")
    p.add_argument("--ctx", type=number(int, 16), default=512, metavar="N",
                   help="tokens per chunk (default 512, as llama-imatrix)")
    p.add_argument("--output-weight", action="store_true",
                   help="include output.weight (llama-imatrix's --process-output)")
    p.add_argument("--threads", type=THREADS, default=None, metavar="N", help="CPU threads (default: physical cores)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgellm.models.resolve import resolve_model
    from quantize.imatrix import calibration, files
    from quantize.imatrix.compute import Plan, chunk_progress, compute
    from quantize.llamacpp import check_input
    from quantize.writer import check_writable

    out = Path(args.output).expanduser()
    check_writable(out, args.force)
    model = resolve_model(args.model)
    check_input(model, "compute the matrix on the f32/f16/bf16 model it was quantized from")
    name, text = calibration.load(args.calibration)
    plan = Plan(name, text, n_ctx=args.ctx, max_chunks=args.chunks, threads=args.threads,
                process_output=args.output_weight)  # fmt: skip
    matrix = compute(model, plan, chunk_progress())
    files.write(matrix, out, force=args.force)
    print(f"{out}  {matrix.describe()}")
    return 0
