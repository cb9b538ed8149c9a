"""The front ends' side of the runner process (edgellm.runtime.runner).

``RunnerProcess`` starts a runner, sends it requests and reads its events on a thread of its
own; if the runner dies (abort, segfault, OOM kill, kill -9) or stops answering, every request
in flight ends with ``RunnerDied``, whose message names the model file, how it died and
llama.cpp's last error lines from its log. ``RemoteEngine`` is the Engine's interface
(``ChatEngine``) on top of it, and starts a fresh runner for the next turn after a death."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgellm.errors import BadModelFile, ContextOverflow, EdgeLLMError
from edgellm.models import gguf_file
from edgellm.runtime import llama_log
from edgellm.runtime.engine import LoadOptions, SamplingParams, TurnStats
from edgellm.runtime.runner import jsonable

STALL_TIMEOUT_S = float(os.environ.get("EDGELLM_RUNNER_TIMEOUT", "60"))
_LOG_LINES = 400

# errors the runner reports by class name that the caller may want to tell apart
_ERRORS: dict[str, type[EdgeLLMError]] = {"ContextOverflow": ContextOverflow}


def background(target: Callable[[], None], name: str) -> threading.Thread:
    """A started daemon thread that never receives Ctrl-C: the kernel may deliver a process's
    SIGINT to any thread that does not block it, and only the main thread's blocking read (the
    `>>>` prompt, waiting for a piece) is interrupted by it, so these threads block SIGINT."""

    def run() -> None:
        if hasattr(signal, "pthread_sigmask"):  # POSIX; elsewhere only the main thread gets Ctrl-C anyway
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        target()

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    return thread


class RunnerDied(EdgeLLMError):
    """The runner process ended (or was ended) while it had work: the model file, how, and why."""


def signal_name(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class Request:
    """The events of one request, in order: iterate for the non-final ones; ``result`` holds the
    final ``done`` payload. An ``error`` event, or the runner's death, raises.

    With ``on_event``, events go to that callback instead, on the reader's thread (the server
    hands them straight to its event loop: no thread of its own per request)."""

    def __init__(self, runner: RunnerProcess, req_id: int, on_event: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:  # fmt: skip
        self.runner = runner
        self.id = req_id
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.deliver: Callable[[dict[str, Any]], None] = on_event or self.events.put
        self.result: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while self.result is None:
            event = self.events.get()
            kind = event.get("event")
            if kind == "done":
                self.result = event
                return
            if kind == "error":
                self.result = event
                raise self.runner.error_for(event)
            yield event

    def wait(self) -> dict[str, Any]:
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        self.runner.send({"op": "cancel", "target": self.id})


class RunnerProcess:
    """One runner child: started and loaded by the constructor (errors raise here)."""

    def __init__(
        self,
        kind: str,
        path: Path,
        options: dict[str, Any],
        *,
        model: str | None = None,
        verbose: bool = False,
        stall_timeout: float = STALL_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        self.verbose = verbose
        self.stall_timeout = stall_timeout
        self.log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
        self._ids = itertools.count(1)
        self._pending: dict[int, Request] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._last_seen = time.monotonic()
        self._death: str | None = None  # why the runner is gone, once it is
        self._stalled = False
        env = {**os.environ, "GGML_NO_BACKTRACE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgellm.runtime.runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is the parent's to interpret
        )
        self._stderr = background(self._read_stderr, "runner-log")
        self._reader = background(self._read_events, "runner-events")
        background(self._watchdog, "runner-watchdog")
        load = self.request("load", kind=kind, path=str(self.path), model=model, options=options)
        self.info = load.wait()

    # -- sending -----------------------------------------------------------------------------
    def request(self, op: str, *, on_event: Callable[[dict[str, Any]], None] | None = None, **args: Any) -> Request:
        """Send ``op``; its events come through the returned Request (or ``on_event``)."""
        with self._lock:
            req = Request(self, next(self._ids), on_event)
            if self._death is not None:
                req.deliver({"event": "error", "error": "RunnerDied", "message": self._death})
                return req
            self._pending[req.id] = req
        self.send({"id": req.id, "op": op, **args})
        return req

    def send(self, message: dict[str, Any]) -> None:
        line = (json.dumps(message, ensure_ascii=False) + "\n").encode()
        with self._send_lock:
            try:
                self.proc.stdin.write(line)  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError, OSError):
                pass  # the reader sees the death and fails every pending request

    # -- reading -----------------------------------------------------------------------------
    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:  # type: ignore[union-attr]
            line = raw.decode("utf-8", errors="replace")
            self.log.append(line.rstrip("\n"))
            if self.verbose:
                sys.stderr.write(line)

    def _read_events(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self._last_seen = time.monotonic()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            req_id = event.get("id")
            if req_id is None:
                continue  # heartbeat
            req = self._pending.get(req_id)
            if req is None:
                continue
            if event.get("event") in ("done", "error"):
                with self._lock:
                    self._pending.pop(req_id, None)
            req.deliver(event)
        self._on_exit()

    def _watchdog(self) -> None:
        while self.proc.poll() is None:
            time.sleep(min(0.5, self.stall_timeout / 4))
            if time.monotonic() - self._last_seen > self.stall_timeout:
                self._stalled = True
                self.proc.kill()
                return

    def _on_exit(self) -> None:
        """The runner's output ended: it died or was shut down. Fail whatever was pending."""
        returncode = self.proc.wait()
        self._stderr.join(timeout=2)
        with self._lock:
            self._death = self._explain(returncode)
            pending, self._pending = list(self._pending.values()), {}
        for req in pending:
            req.deliver({"event": "error", "error": "RunnerDied", "message": self._death})

    def _explain(self, returncode: int) -> str:
        if self._stalled:
            how = f"stopped answering for {self.stall_timeout:g} s and was ended"
        else:
            how = f"died ({signal_name(returncode)})"
        why = llama_log.last_error(self.log)
        return f"{self.path}: the model runner {how}" + (f": {why}" if why else "")

    def error_for(self, event: dict[str, Any]) -> EdgeLLMError:
        """The exception an ``error`` event stands for."""
        message = event.get("message", "unknown error")
        if event.get("error") == "RunnerDied":
            return RunnerDied(message)
        if event.get("error") == "BadModelFile":
            return BadModelFile(self.path, message.removeprefix(f"{self.path}: "))
        return _ERRORS.get(event.get("error", ""), EdgeLLMError)(message)

    # -- lifetime ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._death is None and self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """Ask the runner to free the model and exit; kill it if it does not within ``timeout``."""
        if self.proc.poll() is None:
            self.send({"op": "shutdown"})
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)


class RemoteTurn:
    """A chat turn running in the runner: iterate for text pieces; ``stats`` and ``text`` as
    the in-process Turn has them (``stats`` is filled in place as the turn runs)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.stats = TurnStats()
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __iter__(self) -> Iterator[str]:
        for event in self.request:
            if "stats" in event:
                self._update(event["stats"])
            self._parts.append(event["text"])
            yield event["text"]
        self._update(self.request.result["stats"])  # type: ignore[index]

    def _update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(self.stats, key, value)

    def result(self) -> str:
        for _ in self:
            pass
        return self.text


class RemoteEngine:
    """The Engine's chat interface, served by a runner process (``ChatEngine`` in the TUI).

    Loading happens in the constructor. After the runner dies, the error reaches the caller of
    the turn it killed, and the next call starts a fresh runner."""

    def __init__(self, path: str | os.PathLike[str], options: LoadOptions | None = None, *, model: str | None = None,
                 stall_timeout: float = STALL_TIMEOUT_S) -> None:
        self.options = options or LoadOptions()
        self.info = gguf_file.inspect(path)
        self.path = self.info.path
        self.model = model
        self.stall_timeout = stall_timeout
        self._current: Request | None = None
        self.runner = self._start()

    def _start(self) -> RunnerProcess:
        runner = RunnerProcess(
            "chat", self.path, jsonable(self.options), model=self.model, verbose=self.options.verbose,
            stall_timeout=self.stall_timeout,
        )
        self.n_ctx: int = runner.info["n_ctx"]
        self.n_threads: int = runner.info["n_threads"]
        self.template: str = runner.info["template"]
        return runner

    def _live(self) -> RunnerProcess:
        if not self.runner.alive:
            self.runner.close()
            self.runner = self._start()
        return self.runner

    def chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None) -> RemoteTurn:
        req = self._live().request("chat", messages=messages, params=jsonable(params or SamplingParams()))
        self._current = req
        return RemoteTurn(req)

    def fit(self, messages: list[dict[str, str]], reserve: int) -> tuple[list[dict[str, str]], int]:
        done = self._live().request("fit", messages=messages, reserve=reserve).wait()
        return done["messages"], done["dropped"]

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._live().request("tokenize", text=text, add_special=add_special).wait()["tokens"]

    def reset(self) -> None:
        self._live().request("reset").wait()

    def cancel(self) -> None:
        if self._current is not None and self._current.result is None:
            self._current.cancel()

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
