"""The runner process: llama.cpp lives here, never in a front end.

llama.cpp aborts or segfaults on some files and on RPC faults, and no Python code can catch
that. So every front end (the CLI, the chat app, the server) starts a child process,
``python -m edgellm.runtime.runner``, that loads the model and serves requests over a pipe. If
it dies, the front end gets an error with llama.cpp's last log lines and starts a fresh one.
Ollama's runner subprocess and llama-server's slots are the models (../shared/ANCHORS.md).

The protocol is JSON lines (one message per line): small, debuggable and fast enough (tens of
microseconds a message against milliseconds a token). The parent sends
``{"id": N, "op": NAME, ...}``; the child answers ``{"id": N, "event": NAME, ...}``, each
request ending with a ``done`` or ``error`` event, and sends a ``heartbeat`` every second so
that a frozen child is noticed. The first message is ``load`` (kind, path, options); its
``done`` carries what the parent needs to know about the loaded model.

A *handler* serves the ops of one kind of runner (``HANDLERS``): ``submit`` must return at once
(work runs on the handler's own thread), ``cancel`` stops a request, ``close`` frees the model.
llama.cpp's log goes to stderr, which the parent reads to explain a death. The child exits when
its stdin closes or its parent is gone, so a killed front end leaves no runner behind."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgellm import paths

HEARTBEAT_S = 1.0

# kind -> "module:Class" of its handler, imported in the child only
HANDLERS: dict[str, str] = {
    "chat": "edgellm.runtime.chat_handler:ChatHandler",
    "batch": "edgellm.runtime.batch_handler:BatchHandler",
}

Emit = Callable[..., None]  # emit(request_id, event, **payload)


class Handler(Protocol):
    """What a runner kind implements (see the module docstring)."""

    info: dict[str, Any]  # sent to the parent once loaded

    def submit(self, req_id: int, op: str, args: dict[str, Any], emit: Emit) -> None: ...

    def cancel(self, req_id: int) -> None: ...

    def close(self) -> None: ...


def error_payload(err: BaseException) -> dict[str, str]:
    """An exception as the parent re-raises it: its class name and one line."""
    return {"error": type(err).__name__, "message": str(err) or type(err).__name__}


def status_file(pid: int) -> Path:
    """Where a live runner describes itself for `edgellm ps`."""
    return paths.runtime_dir() / "runners" / f"{pid}.json"


class _Channel:
    """The protocol's output: one JSON line per message, whole lines only, from any thread."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 16)
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def emit(self, req_id: int, event: str, **payload: Any) -> None:
        self.send({"id": req_id, "event": event, **payload})


def _protocol_fd() -> int:
    """Take stdout for the protocol, and point fd 1 at stderr: anything C code prints can then
    never corrupt a message."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return fd


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone, even if stdin is still open somewhere (kill -9 on the
    parent closes the pipe too; this also covers a parent that leaked the pipe to a child)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _write_status(info: dict[str, Any]) -> Path | None:
    target = status_file(os.getpid())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(target)
    except OSError:  # `ps` is a convenience; a read-only runtime dir must not stop a runner
        return None
    return target


def load_handler(kind: str, path: str, options: dict[str, Any]) -> Handler:
    module, _, name = HANDLERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)(path, options)


def serve(stdin: Any, channel: _Channel) -> int:
    """Read requests until ``shutdown`` or end of input; the first must be ``load``."""
    first = json.loads(stdin.readline() or "{}")
    if first.get("op") != "load" or first.get("kind") not in HANDLERS:
        channel.emit(first.get("id", 0), "error", error="ProtocolError", message="the first request must be load")
        return 2
    try:
        handler = load_handler(first["kind"], first["path"], first.get("options", {}))
    except Exception as err:  # a refusal to load: the parent shows it and this runner is done
        channel.emit(first["id"], "error", **error_payload(err))
        return 1
    info = {**handler.info, "pid": os.getpid()}
    status = _write_status(
        {
            "pid": os.getpid(),
            "parent_pid": os.getppid(),
            "kind": first["kind"],
            "model": first.get("model") or Path(first["path"]).name,
            "path": first["path"],
            "started": time.time(),
            **{k: handler.info.get(k) for k in ("n_ctx", "n_gpu_layers", "n_layers", "rpc")},
        }
    )
    channel.emit(first["id"], "done", **info)
    try:
        for line in stdin:
            message = json.loads(line)
            op = message.get("op")
            if op == "shutdown":
                break
            if op == "cancel":
                handler.cancel(message["target"])
                continue
            handler.submit(message["id"], op, message, channel.emit)
    finally:
        handler.close()
        if status is not None:
            status.unlink(missing_ok=True)
    return 0


def main() -> int:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _Channel(_protocol_fd())
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()

    def beat() -> None:
        while True:
            channel.send({"event": "heartbeat"})
            time.sleep(HEARTBEAT_S)

    threading.Thread(target=beat, daemon=True, name="heartbeat").start()
    try:
        return serve(sys.stdin, channel)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    finally:
        os._exit(0)  # skip interpreter teardown: llama.cpp's threads may still hold the GIL


# -- helpers for handlers --------------------------------------------------------------------------
def options_from(cls: type, values: dict[str, Any]) -> Any:
    """A dataclass (LoadOptions, SamplingParams) back from its JSON form: unknown keys dropped,
    lists turned back into the tuples the defaults use."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key in known:
            default = known[key].default
            kwargs[key] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    return cls(**kwargs)


def jsonable(obj: Any) -> Any:
    """A dataclass (and the Paths in it) as plain JSON values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class SerialWorker:
    """Runs submitted jobs one at a time on one thread (a single-sequence handler's loop)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def put(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def run_op(req_id: int, emit: Emit, body: Callable[[], dict[str, Any] | None]) -> None:
    """Run one op's body, ending the request with ``done`` (its result) or ``error``."""
    try:
        result = body() or {}
    except Exception as err:  # EdgeLLMError, or a bug: it fails the request, never the runner
        emit(req_id, "error", **error_payload(err))
    else:
        emit(req_id, "done", **result)


if __name__ == "__main__":
    sys.exit(main())
