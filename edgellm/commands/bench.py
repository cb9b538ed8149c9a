"""`edgellm bench MODEL [--threads LIST] [--gpu-layers LIST] [--json]`: llama-bench's pp512 and
tg128 (mean ± sd over repetitions), time to first token and peak RSS, one row per setting."""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from edgellm.commands.options import (
    GPU_LAYERS_HELP,
    add_rpc_option,
    gpu_layers,
    warn_gpu_layers,
    warn_threads,
    worker_split,
)
from edgellm.measure.benchmark import BenchRow, Setting, bench_context, run_settings, table
from edgellm.models.gguf_file import inspect
from edgellm.models.resolve import resolve_model
from edgellm.runtime.engine import default_threads
from edgellm.runtime.hardware import gpu_offload_supported


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
    p.add_argument("--gpu-layers", type=layer_list, default=["0"], metavar="LIST",
                   help=f"comma list, e.g. 0,16,all,auto; each is {GPU_LAYERS_HELP} (default: 0)")  # fmt: skip
    p.add_argument("-p", "--n-prompt", type=positive_int, default=512, metavar="N", help="prompt tokens (default 512)")
    p.add_argument("-n", "--n-gen", type=positive_int, default=128, metavar="N", help="generated tokens (default 128)")
    p.add_argument(
        "-r", "--repetitions", type=positive_int, default=3, metavar="N", help="timed runs per test (default 3)"
    )
    add_rpc_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object per setting, in a list")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    model = inspect(resolve_model(args.model)).path  # a bad file fails here, before any worker starts
    threads = list(dict.fromkeys(args.threads or [default_threads()]))
    for t in threads:
        warn_threads(t)
    ctx = bench_context(args.n_prompt, args.n_gen)
    if args.rpc:  # layers on the workers: each value as run reads it beside --rpc
        layers = [worker_split(argparse.Namespace(rpc=args.rpc, gpu_layers=v), model, ctx).n_gpu_layers
                  for v in args.gpu_layers]  # fmt: skip
    else:
        layers = [gpu_layers(v, model, ctx) for v in args.gpu_layers]
        warn_gpu_layers(layers)
        if not gpu_offload_supported():  # every layer count is the same CPU run: measure it once, as 0
            layers = [0]
    settings = [
        Setting(threads=t, gpu_layers=g, n_prompt=args.n_prompt, n_gen=args.n_gen, reps=args.repetitions,
                rpc=tuple(args.rpc))  # fmt: skip
        for t, g in itertools.product(threads, dict.fromkeys(layers))
    ]
    rows: list[BenchRow] = []
    try:
        for row in run_settings(model, settings, progress=lambda msg: print(msg, file=sys.stderr, flush=True)):
            rows.append(row)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(rows)} of {len(settings)} settings measured", file=sys.stderr)
        if rows:
            show(rows, args.json)
        return 130
    show(rows, args.json)
    return 0


def show(rows: list[BenchRow], as_json: bool) -> None:
    print(json.dumps([r.to_json() for r in rows], indent=2) if as_json else table(rows), flush=True)
