"""Options shared by the verbs that load a model (run, chat, bench), the parser every verb uses,
and the checks that turn a bad value into one line before anything loads."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from edgellm.errors import BadModelFile, BadOption, EdgeLLMError
from edgellm.models.resolve import resolve_model
from edgellm.runtime.engine import LoadOptions, SamplingParams

GPU_LAYERS_HELP = "layers on the GPU: N, all or auto (auto: as many as free VRAM holds)"
MIN_CTX = 256  # llama.cpp rounds a context up to a multiple of 256 (measured: --ctx 24 gives 256)


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS, [])
        if action.option_strings and "default" not in text and action.default not in quiet:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (what, and where the help is) and whose
    help shows defaults; subparsers are made of this class too."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def number(kind: type[int] | type[float], low: float | None = None, high: float | None = None,
           *, also: tuple[float, ...] = ()) -> Callable[[str], float]:  # fmt: skip
    """An argparse type: a finite ``kind`` in [low, high] (or one of ``also``), else a one-line error."""
    bounds = " and ".join(
        part for part in (f"at least {low}" if low is not None else "", f"at most {high}" if high is not None else "")
        if part
    )
    allowed = bounds + "".join(f" (or {a})" for a in also)

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole' if kind is int else 'a'} number") from None
        if value in also:
            return value
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be {allowed}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


CTX = number(int, 1)
THREADS = number(int, 1)


def add_ctx_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "context size in tokens") -> None:
    p.add_argument("--ctx", type=CTX, default=None, metavar="N",
                   help=f"{what} (default: the model's trained context, at most 4096)")  # fmt: skip


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading")
    add_ctx_option(g)
    g.add_argument("--threads", type=THREADS, default=None, metavar="N",
                   help="CPU threads (default: physical cores, fewer while other programs keep cores busy)")
    g.add_argument("--gpu-layers", default="0", metavar="N|all|auto", help=GPU_LAYERS_HELP)
    g.add_argument("--no-mmap", action="store_true", help="read the whole file into RAM instead of mapping it")
    g.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                   help="flash attention (default: auto, llama.cpp's choice)")
    g.add_argument("--verbose", "-v", action="count", default=0,
                   help="edgellm's statistics per answer on stderr; twice (-vv): llama.cpp's log too")
    g.add_argument("--log", action="store_true", help="llama.cpp's own log on stderr")
    g.add_argument(
        "--lora",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="GGUF LoRA adapter applied at load time, repeatable (`edgellm quantize ADAPTER --lora-only`)",
    )
    g.add_argument(
        "--lora-scale", action="append", type=float, default=[], metavar="S", help="strength of the matching --lora"
    )


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    d = SamplingParams()
    g = p.add_argument_group("sampling")
    g.add_argument("--system", default=None, metavar="TEXT",
                   help="system prompt (default: the registry's for the model, else its template's own)")
    g.add_argument("--temperature", type=number(float, 0), default=d.temperature, metavar="T",
                   help="randomness; 0 = greedy")
    g.add_argument("--top-k", type=number(int, 0), default=d.top_k, metavar="K",
                   help="sample among the K likeliest tokens; 0 = all")
    g.add_argument("--top-p", type=number(float, 0, 1), default=d.top_p, metavar="P",
                   help="sample among the likeliest tokens that make up this probability; 1 = all")
    g.add_argument("--min-p", type=number(float, 0, 1), default=d.min_p, metavar="P",
                   help="drop tokens less likely than this fraction of the likeliest; 0 = off")
    g.add_argument("--repeat-penalty", type=number(float, 0.01), default=d.repeat_penalty, metavar="X",
                   help="divide the odds of recently seen tokens by this; 1 = off")
    g.add_argument("--max-tokens", type=number(int, 1, also=(-1,)), default=d.max_tokens, metavar="N",
                   help="longest answer in tokens; -1 = until the context is full")
    g.add_argument("--seed", type=int, default=None, metavar="N",
                   help="random seed, for repeatable answers (default: random)")
    add_speed_options(p)


# -- speed: lookup decoding, saved KV caches (same answers, sooner) ------------------------------
def add_speed_options(p: argparse.ArgumentParser) -> None:
    """`--draft` (lookup decoding, edgellm.runtime.lookup) and `--cache-size` (closed chats' KV
    caches on disk, edgellm.runtime.kv_store): they change how fast an answer comes, never what it says."""
    from edgellm.runtime import kv_store, lookup

    g = p.add_argument_group("speed (the answers stay the same)")
    g.add_argument("--draft", type=_draft, default=lookup.DRAFT_AUTO, metavar="auto|off|N",
                   help="lookup decoding: draft tokens the conversation already holds and verify them in one "
                        "batch; auto (default) drafts where it measures a gain, N always up to N tokens")
    g.add_argument("--cache-size", type=size, default=kv_store.DEFAULT_LIMIT, metavar="SIZE",
                   help="disk for closed chats' KV caches, so that reopening one is instant (e.g. 500MB, 8GB; "
                        f"0 = off; default {kv_store.DEFAULT_LIMIT // 10**9}GB, least recently used dropped)")
    g.add_argument("--draft-model", default=None, metavar="NAME|FILE|auto",
                   help="a small model of the same vocabulary drafts where lookup finds nothing (`auto`: the "
                        "one the registry names for MODEL, e.g. qwen1.5-0.5b-chat for qwen1.5-7b-chat)")


def draft_model_path(args: argparse.Namespace) -> str | None:
    """`--draft-model NAME|FILE|auto` as a GGUF path (its vocabulary is checked when it loads)."""
    value = getattr(args, "draft_model", None)
    if not value:
        return None
    if value == "auto":
        from edgellm.models import registry

        entry = registry.load().get(str(getattr(args, "model", "")).partition(":")[0])
        if entry is None or entry.draft is None:
            raise BadOption(f"--draft-model auto: the registry names no draft model for {args.model!r}; "
                            "give one: --draft-model NAME|FILE")
        value = entry.draft
    return str(resolve_model(value))


def _draft(text: str) -> int:
    from edgellm.runtime.lookup import parse_draft

    try:
        return parse_draft(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--draft takes ")) from None


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size(text: str) -> int:
    """A size in bytes: `4GB`, `500M`, `1.5GiB`, `0` (decimal units, as edgellm.units prints them)."""
    number = text.strip().upper().rstrip("BIKMGT") or "?"
    unit = text.strip().upper()[len(number):]
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500MB, 4GB, 0)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500MB, 4GB, 0)")
    return int(value)


def gpu_layers(value: str, model: Path | None = None, n_ctx: int | None = None, *, verbose: bool = False) -> int:
    """`--gpu-layers N|all|-1|auto`: llama.cpp takes -1 for all layers; `auto` offloads as many as
    free VRAM holds (edgellm.runtime.planner), 0 without a GPU build or a model to size; ``verbose`` says
    on stderr what `auto` chose from which numbers."""
    if value == "auto":
        from edgellm.runtime.planner import plan_gpu_layers

        if model is None:
            return 0
        fit = plan_gpu_layers(model, n_ctx)
        if verbose:
            print(f"edgellm: {fit.describe()}", file=sys.stderr)
        return fit.layers
    if value in ("all", "-1"):
        return -1
    if not value.isdigit():
        raise BadOption(f"--gpu-layers takes a number of layers, `all` or `auto`, not {value!r}")
    return int(value)


def warn(message: str) -> None:
    """A warning on stderr, worded the same by every command."""
    print(f"edgellm: warning: {message}", file=sys.stderr)


def warn_threads(threads: int | None) -> None:
    cpus = psutil.cpu_count() or 1
    if threads is not None and threads > cpus:
        warn(f"--threads {threads} is more than this machine's {cpus} CPUs: slower, not faster")


def warn_context(ctx: int | None, trained: int) -> None:
    """--ctx beyond what the model was trained for (answers degrade there), or below llama.cpp's minimum."""
    if ctx is None:
        return
    if ctx > trained:
        warn(f"--ctx {ctx} is more than the {trained} tokens this model was trained for: "
             f"text past token {trained} degrades (use --ctx {trained} or less)")  # fmt: skip
    elif ctx < MIN_CTX:
        warn(f"--ctx {ctx} is below llama.cpp's minimum context: raised to {MIN_CTX}")


def warn_gpu_layers(layers: int | list[int], *, remote: bool = False) -> None:
    """One wording for every command: layers asked of a machine with no GPU device (a build with
    only the CPU and RPC backends counts as "offload supported" in llama.cpp); ``remote``: RPC
    workers take them instead."""
    from edgellm.runtime.hardware import gpu_offload_supported

    asked = any(v != 0 for v in (layers if isinstance(layers, list) else [layers]))
    if asked and not remote and not gpu_offload_supported():
        warn("no GPU in this llama.cpp build or machine: --gpu-layers changes nothing (all layers run on the CPU)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The load options, after checking (edgellm.runtime.planner) that the model fits this machine with them."""
    model = resolve_model(args.model) if getattr(args, "model", None) else None
    warn_threads(args.threads)
    if model is not None and args.ctx is not None:
        from edgellm.models.gguf_file import inspect

        warn_context(args.ctx, inspect(model).context_length)
    # with --rpc the workers' share is planned by rpc_load_options, not by free VRAM
    layers = 0 if getattr(args, "rpc", None) else gpu_layers(args.gpu_layers, model, args.ctx, verbose=args.verbose)
    warn_gpu_layers(layers)
    options = LoadOptions(
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_gpu_layers=layers,
        use_mmap=not args.no_mmap,
        flash_attn={"auto": None, "on": True, "off": False}[args.flash_attn],
        verbose=bool(getattr(args, "log", False)) or args.verbose >= 2,  # llama.cpp's log: thousands of lines
        loras=lora_options(args),
        cache_size=getattr(args, "cache_size", 0),
        draft_model=draft_model_path(args),
    )
    if getattr(args, "rpc", None):
        return rpc_load_options(args, options, model)
    if model is not None:
        from edgellm.runtime.planner import check_load

        check_load(model, options.n_ctx, options.n_gpu_layers, flash_attn=options.flash_attn)
    return options


def lora_options(args: argparse.Namespace) -> list[tuple[Path, float]]:
    """``--lora FILE [--lora-scale S]`` pairs in order; a scale needs its adapter."""
    loras = [p.expanduser() for p in getattr(args, "lora", [])]
    scales = getattr(args, "lora_scale", [])
    if len(scales) > len(loras):
        raise EdgeLLMError(f"{len(scales)} --lora-scale values for {len(loras)} --lora adapters; give one per adapter")
    for path in loras:
        if (path / "adapter_config.json").is_file():
            raise BadModelFile(path, f"a PEFT adapter folder; convert it first: `edgellm quantize {path} --lora-only`")
        if not path.is_file():
            raise BadModelFile(path, "no such LoRA adapter (make one with `edgellm quantize ADAPTER --lora-only`)")
    return [(path, scales[i] if i < len(scales) else 1.0) for i, path in enumerate(loras)]


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    """--temperature, --top-k, ... --seed; what the command line lacks keeps SamplingParams' default."""
    return SamplingParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingParams)
                             if hasattr(args, f.name)})


# -- RPC workers (llama.cpp's RPC backend; `edgellm worker` starts one) --------------------------
def add_rpc_option(p: argparse.ArgumentParser) -> None:
    """``--rpc HOST:PORT[,HOST:PORT...]``: load the model over this machine and these workers."""
    p.add_argument(
        "--rpc", type=rpc_list, default=(), metavar="HOST:PORT[,...]",
        help="`edgellm worker`s to split the layers over, with this machine, in proportion to free memory "
        "(--gpu-layers N then counts the layers the workers hold; 0 or auto: their share)",
    )  # fmt: skip


def rpc_list(text: str) -> tuple[str, ...]:
    """An argparse type: the endpoints, checked and normalized (HOST:PORT, port 50052 by default)."""
    from edgellm.runtime.rpc import parse_endpoints

    try:
        return tuple(str(ep) for ep in parse_endpoints(text))
    except BadOption as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def worker_split(args: argparse.Namespace, model: Path, n_ctx: int | None, flash_attn: bool | None = None):  # noqa: ANN201
    """The probed workers and the planner's split of ``model`` over here and them (planner.Split):
    --gpu-layers 0 or auto lets free memory decide, N puts the last N layers on the workers."""
    from edgellm.runtime import planner, rpc
    from edgellm.runtime.hardware import probe

    workers = rpc.probe_all(args.rpc)
    geom, weights, est = planner.for_file(model, n_ctx)
    return planner.split(geom, weights, est.ctx, probe(), planner.worker_holders(workers), worker_gpu_layers(args),
                         flash_attn=flash_attn)  # fmt: skip


def worker_gpu_layers(args: argparse.Namespace) -> int | None:
    """--gpu-layers beside --rpc: None (0 or auto) to split by free memory, else llama.cpp's count."""
    value = getattr(args, "gpu_layers", "0")
    return None if value in ("0", "auto") else gpu_layers(value)


def rpc_load_options(args: argparse.Namespace, options: LoadOptions, model: Path | None) -> LoadOptions:
    """``options`` with the workers and the layers they hold, after checking that every worker
    answers (one line naming the one that does not) and that each holder has room for its share."""
    from edgellm.units import human_bytes

    options = dataclasses.replace(options, rpc=tuple(args.rpc))
    if model is None:
        return options
    plan = worker_split(args, model, options.n_ctx, options.flash_attn)
    short = [h for h in plan.holders if not h.fits]
    if short:
        h = short[0]
        raise EdgeLLMError(
            f"{model.name} split over here and {len(plan.holders) - 1} worker devices: {h.name} would hold "
            f"{h.describe_layers()} needing {human_bytes(h.needed)} but offers {human_bytes(max(h.free, 0))}; "
            "add a worker, use a smaller --ctx or a smaller quantization"
        )
    if args.verbose:
        for h in plan.holders:
            print(f"edgellm: {h.name}: {h.describe_layers()}, {human_bytes(h.needed)}", file=sys.stderr)
    return dataclasses.replace(options, n_gpu_layers=plan.n_gpu_layers)
