"""`edgellm quantize SRC [--type TYPE[,TYPE...]] [-o OUT | --outdir DIR] [--threads N] [--force]
[--imatrix [FILE]] [--calibration TEXT] [--chunks N]`: a Hugging Face model folder (or a GGUF file)
→ quantized GGUF files, without torch, weighted by an importance matrix if asked."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgellm.commands.leftovers import sweep_output
from edgellm.commands.options import THREADS
from edgellm.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    from quantize.llamacpp import DEFAULT_TYPE, FILE_TYPES

    p = sub.add_parser(
        "quantize",
        help="convert a Hugging Face model folder to quantized GGUF files",
        description="Convert a Hugging Face model folder (Llama-2, Alpaca, Chinese-LLaMA/Alpaca-2, ...) to GGUF and "
        "quantize it with llama.cpp. Several types reuse one intermediate file.",
    )
    p.add_argument("src", help="model folder (config.json, tokenizer, *.safetensors or pytorch_model*.bin; or Meta's "
                   "consolidated.*.pth + params.json), a .gguf, or with --lora-only a LoRA adapter folder")
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
    p.add_argument("--threads", type=THREADS, default=None, metavar="N", help="quantizer threads (default: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--report", action="store_true", help="then score every output against the f16 (PPL, KLD, "
                   "same top p, tok/s): a table and a size-vs-KLD PNG (see `edgellm eval`)")  # fmt: skip
    add_imatrix_options(p)
    lora = p.add_argument_group("LoRA adapters (PEFT: adapter_config.json + adapter_model.safetensors or .bin)")
    lora.add_argument("--lora", action="append", default=[], metavar="ADAPTER",
                      help="merge this adapter folder into SRC while converting; repeatable, applied in order")
    lora.add_argument("--lora-only", action="store_true",
                      help="SRC is an adapter folder: write it as a GGUF LoRA for `edgellm run MODEL --lora FILE`")
    lora.add_argument("--base", metavar="FOLDER", help="with --lora-only: the base model folder (its config.json); "
                      "default: the adapter's base_model_name_or_path, locally or in the Hugging Face cache")
    p.set_defaults(handler=run)


def output_folder(src: str, output: str | None, outdir: str | None) -> Path:
    """Where a run writes (and an interrupted one left its hidden intermediates)."""
    if output:
        return Path(output).expanduser().parent
    if outdir:
        return Path(outdir).expanduser()
    source = Path(src).expanduser()
    return source if source.is_dir() else source.parent


def run(args: argparse.Namespace) -> int:
    import quantize

    sweep_output(output_folder(args.src, args.output, args.outdir))
    if args.lora_only:
        return lora_only(args)
    run_quantize = quantize.run
    if args.report:
        from edgellm.commands.quantize_report import quantize_and_report as run_quantize
    asked = args.imatrix is not None or args.calibration or args.chunks
    outputs = run_quantize(
        args.src, args.type, out=args.output, outdir=args.outdir, threads=args.threads, force=args.force,
        loras=args.lora, imatrix=imatrix_request(args) if asked else None,
    )
    for o in outputs:
        print(f"{o.path}  {human_bytes(o.size)}  {o.bits_per_weight:.2f} bits per weight")
    return 0


def add_imatrix_options(p: argparse.ArgumentParser) -> None:
    from edgellm.commands.options import number

    g = p.add_argument_group("importance matrix (llama.cpp's imatrix: better 1-4 bit types; iq1_*, iq2_*, "
                             "iq3_xxs, iq3_xs and q2_k_s need one)")  # fmt: skip
    g.add_argument("--imatrix", nargs="?", const=True, default=None, metavar="FILE",
                   help="weight the quantization by an importance matrix: computed on the float model from "
                   "calibration text (and saved beside the outputs), or FILE (.gguf or .dat, llama-imatrix's "
                   "or `edgellm imatrix`'s) reused")  # fmt: skip
    g.add_argument("--calibration", metavar="TEXT", default=None,
                   help="with --imatrix: UTF-8 text file to compute it on, or bundled (English + Chinese + code, "
                   "the default), bundled:en, bundled:zh, bundled:code or a comma list of them")  # fmt: skip
    g.add_argument("--chunks", type=number(int, 1), default=None, metavar="N",
                   help="with --imatrix: use at most N chunks of 512 tokens (default: all of the text)")


def imatrix_request(args: argparse.Namespace):  # noqa: ANN201 (quantize is imported lazily)
    """--imatrix [FILE] --calibration --chunks as a request; the options without --imatrix are an error."""
    from edgellm.errors import BadOption
    from quantize.imatrix.request import ImatrixRequest

    if args.imatrix is None:
        raise BadOption("--calibration and --chunks choose how --imatrix computes its matrix: add --imatrix")
    file = None if args.imatrix is True else Path(args.imatrix).expanduser()
    return ImatrixRequest(file=file, calibration=args.calibration, chunks=args.chunks)


def lora_only(args: argparse.Namespace) -> int:
    """An adapter folder → a GGUF LoRA adapter (f16 unless -t f32/bf16)."""
    from quantize.llamacpp import DEFAULT_TYPE
    from quantize.lora_adapter import default_output, write_lora_adapter
    from quantize.sources.lora import read_adapter

    outtype = "f16" if args.type == DEFAULT_TYPE else args.type
    out = args.output
    if out is None and args.outdir:
        out = Path(args.outdir).expanduser() / default_output(read_adapter(args.src), outtype).name
    path = write_lora_adapter(args.src, out, base=args.base, outtype=outtype, force=args.force)
    print(f"{path}  {human_bytes(path.stat().st_size)}  LoRA adapter: edgellm run MODEL --lora {path}")
    return 0
