"""`edgellm plan MODEL [--ctx N] [--gpu-layers N|auto]`: will it fit this machine, per quantization?"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from edgellm.commands.list import table
from edgellm.commands.options import (
    GPU_LAYERS_HELP,
    add_ctx_option,
    add_rpc_option,
    gpu_layers,
    warn_context,
    warn_gpu_layers,
    worker_gpu_layers,
)
from edgellm.errors import EdgeLLMError
from edgellm.models import registry
from edgellm.models.resolve import looks_like_path, resolve_model
from edgellm.models.store import Store, parse_ref
from edgellm.runtime import planner, rpc
from edgellm.runtime.hardware import Machine, probe
from edgellm.units import human_bytes, human_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="memory each quantization of a model needs, and whether it fits here")
    p.add_argument("model", help="a registry name (not yet downloaded is fine), a pulled NAME[:TYPE] or a .gguf path")
    add_ctx_option(p, "context to plan for, in tokens")
    p.add_argument("--gpu-layers", default="0", metavar="N|all|auto", help=GPU_LAYERS_HELP)
    add_rpc_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def _layers(value: str, fit: Callable[[], int], total: int) -> int:
    """--gpu-layers as the run verbs read it; `auto` fits this plan's own type and context."""
    return fit() if value == "auto" else min(gpu_layers(value), total + 1)


def _row(
    qtype: str, source: str, est: planner.Estimate, machine: Machine, mark: str = "", file_size: int | None = None
) -> dict[str, object]:
    """One plan row; ``file_size`` is the real file's size where there is one (else the estimate)."""
    v = planner.verdict(est, machine)
    return {
        "type": qtype + mark,
        "source": source,
        "file_size": est.weights if file_size is None else file_size,
        "weights": est.weights,
        "kv_cache": est.kv_cache,
        "compute": est.compute,
        "memory": est.total,
        "ram": v.ram_needed,
        "vram": v.vram_needed,
        "gpu_layers": est.gpu_layers if machine.gpu_offload else 0,
        "fits": v.fits,
    }


def _machine_line(machine: Machine) -> str:
    gpu = "no GPU offload in this llama.cpp build"
    if machine.gpu_offload:
        gpu = ", ".join(f"{g.name} {human_bytes(g.free)} free" for g in machine.gpus) or "GPU build, VRAM unknown"
    return (
        f"this machine: {human_bytes(machine.ram_available)} RAM available of {human_bytes(machine.ram_total)}; {gpu}"
    )


def plan_entry(
    entry: registry.ModelEntry, args: argparse.Namespace, machine: Machine, qtype: str | None = None
) -> list[dict[str, object]]:
    """Every planned type of a registry model, or only ``qtype`` when MODEL named one."""
    ctx = args.ctx or planner.default_context(entry.context)
    geom = planner.Geometry.from_shape(entry.shape, entry.context)
    rows = []
    for each in [qtype] if qtype else planner.PLAN_TYPES:
        weights = planner.Weights.from_params(entry.shape, each)
        layers = _layers(args.gpu_layers, lambda w=weights: planner.fit_gpu_layers(geom, w, ctx, machine), geom.layers)
        est = planner.estimate(geom, weights, ctx, gpu_layers=layers)
        source = "gguf" if entry.gguf_file(each) else "convert"
        rows.append(_row(each, source, est, machine, " *" if each == entry.recommended else ""))
    return rows


def plan_file(path: str, args: argparse.Namespace, machine: Machine) -> list[dict[str, object]]:
    geom, weights, est = planner.for_file(path, args.ctx)
    layers = _layers(args.gpu_layers, lambda: planner.fit_gpu_layers(geom, weights, est.ctx, machine), geom.layers)
    est = planner.estimate(geom, weights, est.ctx, gpu_layers=layers)
    from edgellm.models import gguf_file

    info = gguf_file.inspect(path)
    return [_row(info.file_type, "file", est, machine, file_size=info.file_size)]


def _entry_to_plan(text: str) -> registry.ModelEntry | None:
    """The registry entry when MODEL names a model type by type; None for a file (a path, `default`,
    a pulled NAME:TYPE or a pulled model the registry does not know)."""
    if looks_like_path(text) or text == "default":
        return None
    ref = parse_ref(text)
    entry = registry.load().get(ref.name)
    if entry is None or (ref.qtype and any(m.qtype == ref.qtype for m in Store().named(ref.name))):
        return None
    return entry


def run(args: argparse.Namespace) -> int:
    machine = probe()
    if args.gpu_layers != "auto":
        warn_gpu_layers(gpu_layers(args.gpu_layers))
    entry = _entry_to_plan(args.model)
    if entry is not None:
        warn_context(args.ctx, entry.context)
        qtype = parse_ref(args.model).qtype
        if qtype and qtype not in planner.BITS_PER_WEIGHT:
            raise EdgeLLMError(f"{args.model}: edgellm cannot plan {qtype} files (try one of "
                               f"{', '.join(planner.PLAN_TYPES)})")  # fmt: skip
        title = (
            f"{entry.name}: {human_count(entry.shape.params)} parameters, {entry.shape.layers} layers, "
            f"context {args.ctx or planner.default_context(entry.context)} of {entry.context}"
        )
        rows = plan_entry(entry, args, machine, qtype)
        ctx = args.ctx or planner.default_context(entry.context)
        geom = planner.Geometry.from_shape(entry.shape, entry.context)

        def sizes(t: str) -> tuple[planner.Geometry, planner.Weights]:
            return geom, planner.Weights.from_params(entry.shape, t)
    else:
        path = str(resolve_model(args.model))
        geom, _weights, est = planner.for_file(path, args.ctx)
        warn_context(args.ctx, geom.context)
        assumed = "" if args.ctx else " (the default; --ctx N plans another)"
        title = f"{path}: context {est.ctx} of {geom.context}{assumed}"
        rows = plan_file(path, args, machine)
        ctx = est.ctx

        def sizes(t: str) -> tuple[planner.Geometry, planner.Weights]:
            return planner.for_file(path, args.ctx)[:2]
    workers = rpc.probe_all(args.rpc) if args.rpc else ()
    if workers:
        add_split(rows, sizes, ctx, args, machine, workers)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "rows": rows,
                    "workers": [{"endpoint": str(w.endpoint), "free": w.free} for w in workers],
                    "ram_available": machine.ram_available,
                    "vram_free": machine.vram_free,
                },
                indent=2,
            )
        )
        return 0
    print(title)
    print(_machine_line(machine))
    if workers:
        return print_split(rows, workers, entry is not None)
    gpu = machine.gpu_offload
    header = (
        ["TYPE", "FILE", "MEMORY", "KV CACHE"] + (["RAM", "VRAM", "GPU LAYERS"] if gpu else []) + ["FITS", "SOURCE"]
    )
    lines = [header]
    for r in rows:
        layers = "all" if r["gpu_layers"] == -1 else str(r["gpu_layers"])
        split = [human_bytes(r["ram"]), human_bytes(r["vram"]), layers] if gpu else []
        lines.append(
            [str(r["type"]), human_bytes(r["file_size"]), human_bytes(r["memory"]), human_bytes(r["kv_cache"])]
            + split
            + ["yes" if r["fits"] else "no", str(r["source"])]
        )
    print(table(lines))
    if entry is not None:
        print("* recommended; gguf: ready-made file, convert: built from the original checkpoint")
    return 0


# -- with --rpc: over this machine and the workers ----------------------------------------------
def add_split(rows: list[dict[str, object]], sizes: Callable[[str], tuple[planner.Geometry, planner.Weights]],
              ctx: int, args: argparse.Namespace, machine: Machine, workers: tuple[rpc.Worker, ...]) -> None:
    """Each row with where its layers would go over here and the workers, and whether that fits."""
    holders = planner.worker_holders(workers)
    for r in rows:
        geom, weights = sizes(str(r["type"]).removesuffix(" *"))
        s = planner.split(geom, weights, ctx, machine, holders, worker_gpu_layers(args))
        r.update(
            here=s.holders[0].needed,
            on_workers=sum(h.needed for h in s.holders[1:]),
            worker_layers=s.remote_layers,
            layers=s.block_count,
            fits_split=s.fits,
            placement=[{"holder": h.name, "layers": list(h.layers), "output": h.output, "bytes": h.needed,
                        "offered": h.free} for h in s.holders],
        )  # fmt: skip


def print_split(rows: list[dict[str, object]], workers: tuple[rpc.Worker, ...], registry_entry: bool) -> int:
    for w in workers:
        print(f"worker {w.endpoint}: {human_bytes(w.free)} offered (RPC protocol {'.'.join(map(str, w.version))})")
    lines = [["TYPE", "FILE", "MEMORY", "HERE", "WORKERS", "WORKER LAYERS", "FITS HERE", "FITS SPLIT", "SOURCE"]]
    for r in rows:
        lines.append([
            str(r["type"]), human_bytes(r["file_size"]), human_bytes(r["memory"]), human_bytes(r["here"]),
            human_bytes(r["on_workers"]), f"{r['worker_layers']}/{r['layers']}", "yes" if r["fits"] else "no",
            "yes" if r["fits_split"] else "no", str(r["source"]),
        ])  # fmt: skip
    print(table(lines))
    print("HERE / WORKERS: weights, KV cache and compute buffers each side holds, split in proportion to free memory")
    if registry_entry:
        print("* recommended; gguf: ready-made file, convert: built from the original checkpoint")
    return 0
