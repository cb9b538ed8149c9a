"""Options shared by the verbs that load a model (run, chat, bench)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from edgellm.errors import BadModelFile, BadOption, EdgeLLMError
from edgellm.models.resolve import resolve_model
from edgellm.runtime.engine import LoadOptions, SamplingParams


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading")
    g.add_argument("--ctx", type=int, default=None, metavar="N", help="context size in tokens (default: 4096)")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: physical cores)")
    g.add_argument("--gpu-layers", default="0", metavar="N", help="layers to offload to the GPU (default 0)")
    g.add_argument("--no-mmap", action="store_true", help="read the whole file into RAM instead of mapping it")
    g.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                   help="flash attention (default: auto, llama.cpp's choice)")
    g.add_argument("--verbose", action="store_true", help="llama.cpp's log and per-turn statistics on stderr")
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
    g.add_argument("--system", default=None, help="system prompt")
    g.add_argument("--temperature", type=float, default=d.temperature, help=f"0 = greedy (default {d.temperature})")
    g.add_argument("--top-k", type=int, default=d.top_k)
    g.add_argument("--top-p", type=float, default=d.top_p)
    g.add_argument("--min-p", type=float, default=d.min_p)
    g.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty)
    g.add_argument("--max-tokens", type=int, default=d.max_tokens, help="-1 = until the context is full")
    g.add_argument("--seed", type=int, default=None)


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


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The load options, after checking (edgellm.runtime.planner) that the model fits this machine with them."""
    model = resolve_model(args.model) if getattr(args, "model", None) else None
    options = LoadOptions(
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_gpu_layers=gpu_layers(args.gpu_layers, model, args.ctx, verbose=args.verbose),
        use_mmap=not args.no_mmap,
        flash_attn={"auto": None, "on": True, "off": False}[args.flash_attn],
        verbose=args.verbose,
        loras=lora_options(args),
    )
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
