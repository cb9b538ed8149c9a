"""`edgellm show MODEL [--json]`: what a GGUF file holds, read from its header."""

from __future__ import annotations

import argparse
import json

from edgellm.commands.options import GPU_LAYERS_HELP, add_rpc_option, gpu_layers, warn_gpu_layers, worker_split
from edgellm.models.gguf_file import GGUFInfo, inspect
from edgellm.models.identity import default_system
from edgellm.models.resolve import resolve_model
from edgellm.runtime import backends
from edgellm.runtime.hardware import gpu_offload_supported
from edgellm.runtime.placement import layer_split, offload_note, split_label, split_lines
from edgellm.units import human_bytes, human_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="architecture, size, quantization and template of a model")
    p.add_argument("model", help="`default`, a model name or a path to a .gguf file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--gpu-layers", default="0", metavar="N|all|auto",
                   help=f"show where the layers would run with these offloaded: {GPU_LAYERS_HELP}")
    add_rpc_option(p)
    p.set_defaults(handler=run)


def describe(info: GGUFInfo, processor: str) -> list[tuple[str, str]]:
    return [
        ("name", info.name),
        ("architecture", info.architecture),
        ("parameters", human_count(info.parameters)),
        ("quantization", info.file_type),
        ("file size", f"{human_bytes(info.file_size)} ({info.bits_per_weight:.2f} bits per weight)"),
        ("context length", str(info.context_length)),
        ("layers", str(info.block_count)),
        ("heads", f"{info.head_count} (kv {info.head_count_kv})"),
        ("embedding", str(info.embedding_length)),
        ("vocabulary", str(info.vocab_size)),
        ("system prompt", default_system(info.path) or "(the chat template's own, if any)"),
        ("processor", processor),
        ("path", str(info.path)),
    ]


def run(args: argparse.Namespace) -> int:
    path = resolve_model(args.model)
    info = inspect(path)
    split = worker_split(args, path, None) if args.rpc else None
    if split is not None:
        layers, processor = split.n_gpu_layers, split_label(split)
    else:
        layers = gpu_layers(args.gpu_layers, path, verbose=True)  # `auto` says what it chose, on stderr
        warn_gpu_layers(layers)
        processor = layer_split(layers, info.block_count, gpu_offload_supported())
    if args.json:
        where = {"placement": [{"holder": h.name, "layers": list(h.layers), "output": h.output,
                                "weights": h.weights, "kv_cache": h.kv_cache, "compute": h.compute, "offered": h.free}
                               for h in split.holders]} if split else {}  # fmt: skip
        print(json.dumps({**info.to_json(), "system": default_system(path), "gpu_layers": layers,
                          "processor": processor, **where}, ensure_ascii=False, indent=2))
        return 0
    rows = describe(info, processor)
    if split is not None:
        at = rows.index(("processor", processor)) + 1
        rows[at:at] = [("placement" if i == 0 else "", line) for i, line in enumerate(split_lines(split))]
    note = offload_note(info.file_type, [d.name for d in backends.gpus()], layers) if layers else None
    if note:
        rows.insert(rows.index(("processor", processor)) + 1, ("note", note))
    for key, value in rows:
        print(f"  {key:<16}{value}")
    print("  chat template")
    for line in (info.chat_template or "(none: ChatML is used)").splitlines() or [""]:
        print(f"    {line}")
    return 0
