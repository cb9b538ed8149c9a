"""`edgellm worker`: lend this machine's CPU (or GPU) to a model loaded on another machine.

The worker is llama.cpp's RPC server (ggml-rpc, edgellm.runtime.rpc); clients use it with
`--rpc HOST:PORT`. It binds 127.0.0.1 unless told otherwise, because the protocol has neither
authentication nor encryption."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys
import threading
from pathlib import Path

from edgellm import __version__, paths
from edgellm.commands.options import THREADS, number, size
from edgellm.errors import EdgeLLMError
from edgellm.runtime import rpc
from edgellm.units import human_bytes

_BIND_ERRORS = {
    errno.EADDRINUSE: "port {port} is already in use on {host} (another worker?): pick another --port",
    errno.EADDRNOTAVAIL: "{host} is not an address of this machine: pick one of its addresses, or 0.0.0.0 for all",
    errno.EACCES: "binding port {port} needs privileges: pick a --port above 1023",
}


PORT = number(int, 1, 65535)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="lend this machine's CPU or GPU to a model run elsewhere (`--rpc HOST:PORT` there)",
        description="Starts llama.cpp's RPC server. Clients offload layers to it with --rpc. "
        "The protocol is unauthenticated and unencrypted: it listens on 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=PORT, default=rpc.DEFAULT_PORT, help=f"TCP port (default {rpc.DEFAULT_PORT})")
    p.add_argument("--threads", type=THREADS, default=None, metavar="N", help="CPU threads (default: physical cores)")
    p.add_argument(
        "--cache",
        nargs="?",
        type=Path,
        const=_default_cache(),
        default=None,
        metavar="DIR",
        help="keep the weights clients send (tensors over 10 MiB) so their next load sends only hashes "
        "(default DIR: rpc/ in edgellm's cache folder)",
    )
    p.add_argument("--device", choices=sorted(rpc.DEVICE_TYPES), default="cpu", help="what to lend (default cpu)")
    p.add_argument(
        "--memory", type=_memory, default=None, metavar="SIZE",
        help="memory offered to clients, e.g. 12GB (default: RAM available, or free VRAM); clients split layers by it",
    )  # fmt: skip
    p.set_defaults(handler=run)


def _default_cache() -> Path:
    return paths.cache_dir() / "rpc"


def _memory(text: str) -> int:
    """--memory: a size as every other edgellm size (decimal: 12GB, 512MB, 1.5GiB), at least 1 MiB."""
    value = size(text)
    if value < 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r} is less than 1 MiB")
    return value


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is this machine's loopback."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind(endpoint: rpc.Endpoint) -> None:
    """Bind once in Python for a clear error: llama.cpp only prints "Failed to create server socket"."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise EdgeLLMError(f"--host {endpoint.host}: cannot resolve it ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp does
        try:
            s.bind(address)
        except OSError as err:
            why = _BIND_ERRORS.get(err.errno, "cannot listen on {host}:{port}: " + (err.strerror or str(err)))
            raise EdgeLLMError(why.format(host=endpoint.host, port=endpoint.port)) from None


def run(args: argparse.Namespace) -> int:
    from edgellm.runtime.engine import default_threads

    endpoint = rpc.Endpoint.parse(f"{args.host}:{args.port}")
    rpc.require()
    check_bind(endpoint)
    threads = args.threads or default_threads()
    devices = rpc.local_devices(args.device)
    offered = [rpc.OfferedDevice(ptr, dev.kind == "CPU", args.memory) for ptr, dev in devices]
    names = [dev for _, dev in devices]
    cache = args.cache.expanduser() if args.cache else None
    if cache:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EdgeLLMError(f"--cache {cache}: cannot create it ({err.strerror})") from None
    if not is_loopback(endpoint.host):
        print(f"edgellm worker: warning: listening on {endpoint.host}, reachable from other machines; "
              f"{rpc.SAFE_CROSSING}.", file=sys.stderr)  # fmt: skip
    print(f"edgellm worker {__version__} (llama.cpp RPC protocol {'.'.join(map(str, rpc.PROTOCOL))}) on {endpoint}")
    for device, name in zip(offered, names, strict=True):
        free, total = device.memory()
        print(f"  device {name.name}: {name.description}, {human_bytes(free)} offered of {human_bytes(total)}"
              + (f", {threads} threads" if device.is_cpu else ""))  # fmt: skip
    print(f"  cache  {cache} (weights over 10 MiB are kept; the next load sends only their hashes)" if cache
          else "  cache  off (--cache keeps received weights for the next load)")  # fmt: skip
    print(f"use it from another machine: edgellm run MODEL --rpc {_client_address(endpoint)}")
    print("Ctrl-C stops it.", flush=True)
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            rpc.serve(endpoint, [d.pointer for d in offered], threads, cache)
        except BaseException as err:  # re-raised on the main thread
            failed.append(err)

    thread = threading.Thread(target=serve, name="edgellm-rpc-server", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)  # the main thread stays in Python, so Ctrl-C reaches it
    except KeyboardInterrupt:
        print("edgellm worker: stopped", file=sys.stderr)
        return 0
    if failed:
        raise failed[0]
    raise EdgeLLMError(f"llama.cpp's RPC server could not start on {endpoint} (see its message above)")


def _client_address(endpoint: rpc.Endpoint) -> str:
    """What a client should type: this machine's name when listening on all interfaces."""
    if endpoint.host == "0.0.0.0":
        return f"{socket.gethostname()}:{endpoint.port}"
    return str(endpoint)
