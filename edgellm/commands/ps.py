"""`edgellm ps [--json]`: the models loaded right now (by `run`, `chat`, `serve`, workers), as
`ollama ps` lists them: which model, which process, its memory and CPU, where the layers run.

Each live runner describes itself in `<runtime dir>/runners/<pid>.json` (edgellm.runtime.runner);
a file whose process is gone (killed with -9) is skipped and removed."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import psutil

from edgellm import paths
from edgellm.commands.list import ago, table
from edgellm.models.identity import model_label
from edgellm.runtime.hardware import gpu_offload_supported
from edgellm.runtime.placement import layer_split
from edgellm.units import human_bytes

CPU_SAMPLE_S = 0.2  # how long CPU use is measured over


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ps", help="models loaded now: process, memory, CPU, where the layers run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def _read(path: Path) -> dict[str, object] | None:
    """A runner's status if its process still runs (the same process: not a reused pid), else None
    (and the stale file goes)."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        pid = int(status["pid"])
        proc = psutil.Process(pid)
        if proc.create_time() > float(status.get("started", time.time())) + 1:  # a newer process, same pid
            raise psutil.NoSuchProcess(pid)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # half-written or unreadable: another runner's business
    except psutil.NoSuchProcess:
        path.unlink(missing_ok=True)
        return None
    status["process"] = proc
    return status


def loaded() -> list[dict[str, object]]:
    """Every live runner's status, with its resident memory and CPU use measured now."""
    folder = paths.runtime_dir() / "runners"
    found = [s for p in sorted(folder.glob("*.json")) if (s := _read(p)) is not None]
    procs = [s.pop("process") for s in found]
    for proc in procs:
        proc.cpu_percent(None)  # starts the measurement
    if procs:
        time.sleep(CPU_SAMPLE_S)
    offload = gpu_offload_supported()
    rows = []
    for status, proc in zip(found, procs, strict=True):
        try:
            rss, cpu = proc.memory_info().rss, proc.cpu_percent(None)
        except psutil.NoSuchProcess:  # ended while we looked
            continue
        layers, total = int(status.get("n_gpu_layers") or 0), int(status.get("n_layers") or 0)
        rpc = status.get("rpc") or []
        where = layer_split(layers, total, offload) if total else "?"
        rows.append({
            **status,
            "name": model_label(str(status.get("model") or status.get("path") or "?")),
            "rss": rss,
            "cpu_percent": cpu,
            "processor": f"{where}, RPC {', '.join(map(str, rpc))}" if rpc else where,
        })  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> int:
    rows = loaded()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    lines = [["NAME", "PID", "KIND", "MEMORY", "CPU", "PROCESSOR", "CONTEXT", "STARTED"]]
    for r in rows:
        lines.append([
            str(r["name"]), str(r["pid"]), str(r.get("kind", "?")), human_bytes(r["rss"]),  # type: ignore[arg-type]
            f"{r['cpu_percent']:.0f}%", str(r["processor"]), str(r.get("n_ctx") or "?"),
            ago(float(r.get("started") or time.time())),  # type: ignore[arg-type]
        ])  # fmt: skip
    print(table(lines))
    return 0
