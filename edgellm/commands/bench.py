"""`edgellm bench MODEL [--threads LIST] [--gpu-layers LIST] [--json]`: llama-bench's pp512 and
tg128 (mean ± sd over repetitions), time to first token and peak RSS, one row per setting."""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import llama_cpp

from edgellm.commands.options import gpu_layers
from edgellm.measure.benchmark import Setting, bench_context, run_settings, table
from edgellm.models.gguf_file import inspect
from edgellm.models.resolve import resolve_model
from edgellm.runtime.engine import default_threads


def int_list(minimum: int):  # noqa: ANN201 (an argparse type)
    """An argparse type for comma lists such as `1,2,4`."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
        if any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"'{text}': values must be at least {minimum}")
        return values

    return parse


def layer_list(text: str) -> list[str]:
    """`--gpu-layers 0,16,all,auto`: checked now, turned into numbers once the model is known."""
    values = [v.strip() for v in text.split(",")]
    for v in values:
        if v != "auto":
            gpu_layers(v)  # raises BadOption (a ValueError: argparse reports it as a usage error)
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="prompt and generation speed (pp512/tg128 as llama-bench), time to first token, peak memory",
        description="Measures like llama-bench: pp = random prompt tokens in 512-token batches, tg = one token at "
        "a time from an empty cache, after one warm-up; mean ± sd of tokens/s over the repetitions. "
        "TTFT = a chat turn with a prompt of about --n-prompt tokens, until its first token. "
        "Each setting runs in its own process; peak RSS is that process's.",
    )
    p.add_argument("model", help="`default`, a model name or a path to a .gguf file")
    p.add_argument("--threads", type=int_list(1), default=None, metavar="LIST", help="e.g. 1,2,4 (default: cores)")
    p.add_argument(
        "--gpu-layers", type=layer_list, default=["0"], metavar="LIST", help="e.g. 0,16,all,auto (default 0)"
    )
    p.add_argument("-p", "--n-prompt", type=positive_int, default=512, metavar="N", help="prompt tokens (default 512)")
    p.add_argument("-n", "--n-gen", type=positive_int, default=128, metavar="N", help="generated tokens (default 128)")
    p.add_argument(
        "-r", "--repetitions", type=positive_int, default=3, metavar="N", help="timed runs per test (default 3)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per setting, in a list")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    model = inspect(resolve_model(args.model)).path  # a bad file fails here, before any worker starts
    threads = args.threads or [default_threads()]
    layers = [gpu_layers(v, model, bench_context(args.n_prompt, args.n_gen)) for v in args.gpu_layers]
    settings = [
        Setting(threads=t, gpu_layers=g, n_prompt=args.n_prompt, n_gen=args.n_gen, reps=args.repetitions)
        for t, g in itertools.product(threads, layers)
    ]
    if any(s.gpu_layers for s in settings) and not llama_cpp.llama_supports_gpu_offload():
        print("note: this llama.cpp build has no GPU backend; --gpu-layers changes nothing", file=sys.stderr)
    rows = run_settings(model, settings, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        print(table(rows))
    return 0
