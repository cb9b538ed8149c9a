"""The runner's ``chat`` kind: one Engine, one turn at a time (the CLI and the chat app).

Ops: ``chat`` (messages, params) streams ``piece`` events and ends with the turn's statistics;
``fit`` (messages, reserve) trims a conversation to the context; ``reset`` forgets the KV
cache; ``tokenize`` (text). A cancel for the running turn goes straight to the Engine, which
stops within one graph node; a cancel that arrives before the turn starts is remembered."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from edgellm.runtime.runner import Emit, SerialWorker, jsonable, options_from, run_op


class ChatHandler:
    def __init__(self, path: str, options: dict[str, Any]) -> None:
        opts = options_from(LoadOptions, options)
        opts.loras = [(p, s) for p, s in opts.loras]
        # The runner is the crash isolation the probe exists for: no second child process. The
        # whole llama.cpp log goes to stderr, where the parent keeps its tail to explain a death
        # (and shows it with --verbose).
        self.engine = Engine(path, dataclasses.replace(opts, probe=False, verbose=True))
        self.engine.draft_engine  # noqa: B018 - a --draft-model loads (and its vocabulary is checked) up front
        eng = self.engine
        self.info = {
            "n_ctx": eng.n_ctx,
            "n_threads": eng.n_threads,
            "template": eng.template,
            "n_gpu_layers": opts.n_gpu_layers,
            "n_layers": eng.info.block_count,
            "rpc": list(getattr(opts, "rpc", ())),
        }
        self._worker = SerialWorker("chat-turns")
        self._running: int | None = None
        self._cancelled: set[int] = set()

    def submit(self, req_id: int, op: str, args: dict[str, Any], emit: Emit) -> None:
        body = {"chat": self._chat, "fit": self._fit, "reset": self._reset, "tokenize": self._tokenize}.get(op)
        if body is None:
            emit(req_id, "error", error="ProtocolError", message=f"unknown op {op!r}")
            return
        self._worker.put(lambda: run_op(req_id, emit, lambda: body(req_id, args, emit)))

    def cancel(self, req_id: int) -> None:
        self._cancelled.add(req_id)
        if self._running == req_id:
            self.engine.cancel()

    def close(self) -> None:
        self.engine.cancel()
        self._worker.stop()
        self.engine.save_state()  # the chat is being closed (quit, runner ending): reopening it is instant
        self.engine.close()

    # -- ops -----------------------------------------------------------------------------------
    def _chat(self, req_id: int, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        turn = self.engine.chat(args["messages"], options_from(SamplingParams, args.get("params", {})))
        self._running = req_id
        try:
            if req_id in self._cancelled:  # the cancel came before chat() reset the flag
                self.engine.cancel()
            first = True
            for piece in turn:
                if first:  # the prompt is read: its statistics go with the first piece
                    emit(req_id, "piece", text=piece, stats=jsonable(turn.stats))
                    first = False
                else:
                    emit(req_id, "piece", text=piece)
        finally:
            self._running = None
            self._cancelled.discard(req_id)
        return {"stats": jsonable(turn.stats), "tokens": len(turn.tokens)}

    def _fit(self, req_id: int, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        messages, dropped = self.engine.fit(args["messages"], args["reserve"])
        return {"messages": messages, "dropped": dropped}

    def _reset(self, req_id: int, args: dict[str, Any], emit: Emit) -> None:
        self.engine.save_state()  # a chat closed (switching to another saves by itself: Engine._restore_state)
        self.engine.reset()

    def _tokenize(self, req_id: int, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"tokens": self.engine.tokenize(args["text"], add_special=args.get("add_special", True))}
