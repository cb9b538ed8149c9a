"""The served models: one runner process each, restarted after a death, and the bridge from a
runner request's events (read on the client's thread) into the event loop.

A runner that dies fails its requests in flight (RunnerDied -> 503); the next request for the
model starts a fresh one, so the server itself stays up (Ollama restarts lazily the same way)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.runtime.client import RunnerProcess
from edgellm.server.errors import APIError

FINAL = ("done", "error")


class EventStream:
    """A runner request's events in the event loop, in lists (``batches``: the events that
    arrived together, so a slow client gets them in one write). The runner client's reader
    thread hands each event to the loop (``call_soon_threadsafe``): no thread per request, and
    the loop never blocks. ``cancel`` tells the runner to free the sequence."""

    def __init__(self, runner: RunnerProcess, op: str, args: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arrived: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self.finished = False
        self.request = runner.request(op, on_event=self._from_reader, **args)

    def _from_reader(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self._loop.call_soon_threadsafe(self._arrive, event)

    def _arrive(self, event: dict[str, Any]) -> None:
        self._arrived.append(event)
        self._wake.set()

    async def next(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The events that arrived since the last call, waiting for one if none did;
        TimeoutError after ``timeout`` seconds without any."""
        if not self._arrived:
            self._wake.clear()
            await asyncio.wait_for(self._wake.wait(), timeout)
        batch, self._arrived = self._arrived, []
        if batch[-1].get("event") in FINAL:
            self.finished = True
        return batch

    async def accepted(self) -> None:
        """Wait for the runner to take the request (``queued``); raise its refusal as an APIError."""
        batch = await self.next()
        if batch[0].get("event") == "error":
            raise APIError.from_runner(batch[0])
        self._arrived[:0] = [e for e in batch if e.get("event") != "queued"]
        self.finished = False  # what came with ``queued`` (even ``done``) is batches()' to deliver

    async def batches(self, idle: float | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """The events as they arrive, in lists; an empty list after each ``idle`` seconds without
        any (time to ping the client or check that it is still there)."""
        while not self.finished:
            try:
                yield await self.next(idle)
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                yield []

    def cancel(self) -> None:
        if not self.finished:
            self.request.cancel()


EXIT_WAIT_S = 5.0  # a runner that has not exited by then is killed
SAVE_WAIT_S = 60.0  # the same, while it writes its conversations to the disk store (`--cache-size`)


@dataclass
class ServedModel:
    """One model under one name, served by a ``batch`` runner."""

    name: str
    path: Path
    options: dict[str, Any]  # the runner's load options (LoadOptions' fields, slots, chunk, max_queue)
    verbose: bool = False
    created: int = 0
    runner: RunnerProcess | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def start(self) -> None:
        """Start (or restart) the runner; blocks while the model loads."""
        if self.runner is not None:
            self.runner.close()
        self.runner = RunnerProcess("batch", self.path, self.options, model=self.name, verbose=self.verbose)

    async def live(self) -> RunnerProcess:
        """The runner, restarted first if it died (one restart at a time)."""
        async with self._lock:
            if self.runner is None or not self.runner.alive:
                try:
                    await asyncio.to_thread(self.start)
                except EdgeLLMError as err:
                    raise APIError(503, f"model {self.name} could not be restarted: {err}",
                                   code="model_unavailable") from None  # fmt: skip
        assert self.runner is not None
        return self.runner

    async def open(self, op: str, args: dict[str, Any]) -> EventStream:
        """Send a request; returns once the runner accepted it (``queued``) or raises its refusal."""
        runner = await self.live()
        stream = EventStream(runner, op, args, asyncio.get_running_loop())
        await stream.accepted()
        return stream

    async def ask(self, op: str, **args: Any) -> dict[str, Any]:
        """A request with one answer (``done``'s payload)."""
        runner = await self.live()
        stream = EventStream(runner, op, args, asyncio.get_running_loop())
        async for batch in stream.batches():
            for event in batch:
                if event["event"] == "error":
                    raise APIError.from_runner(event)
                if event["event"] == "done":
                    return event
        raise APIError(500, "the runner ended the request without an answer")

    def close(self) -> None:
        """Stop the runner; with ``--cache-size`` it first writes its conversations to the disk
        store, which may take longer than a plain exit."""
        if self.runner is not None:
            with contextlib.suppress(Exception):
                self.runner.close(timeout=SAVE_WAIT_S if self.options.get("cache_size") else EXIT_WAIT_S)
