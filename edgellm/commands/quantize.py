"""`edgellm quantize SRC [--type TYPE[,TYPE...]] [-o OUT | --outdir DIR] [--threads N] [--force]`:
a Hugging Face model folder (or a GGUF file) → quantized GGUF files, without torch."""

from __future__ import annotations

import argparse

from edgellm.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    from quantize.llamacpp import DEFAULT_TYPE, FILE_TYPES

    p = sub.add_parser(
        "quantize",
        help="convert a Hugging Face model folder to quantized GGUF files",
        description="Convert a Hugging Face model folder (Llama-2, Alpaca, Chinese-LLaMA/Alpaca-2, ...) to GGUF and "
        "quantize it with llama.cpp. Several types reuse one intermediate file.",
    )
    p.add_argument("src", help="model folder (config.json, tokenizer, *.safetensors or pytorch_model*.bin), or a .gguf")
    p.add_argument(
        "--type",
        "-t",
        default=DEFAULT_TYPE,
        metavar="TYPE[,TYPE...]",
        help=f"output types (default {DEFAULT_TYPE}): {', '.join(FILE_TYPES)}",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", metavar="OUT", help="output file ({ftype} in it for several types)")
    where.add_argument("--outdir", metavar="DIR", help="folder for the outputs, named by the GGUF convention "
                       "(default: the model folder)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, metavar="N", help="quantizer threads (default: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import quantize

    outputs = quantize.run(
        args.src, args.type, out=args.output, outdir=args.outdir, threads=args.threads, force=args.force
    )
    for o in outputs:
        print(f"{o.path}  {human_bytes(o.size)}  {o.bits_per_weight:.2f} bits per weight")
    return 0
