"""The runner's ``batch`` kind: a BatchEngine serving many requests at once (`edgellm serve`).

Ops (all answered as ``queued``, then ``piece``/``embedding`` events, then ``done`` or ``error``):
``chat`` (messages: the model's own chat template, rendered and tokenized here, in the runner),
``complete`` (prompt: raw text), ``embed`` (input: text); ``slots`` answers at once with how
many slots are busy and how many requests wait. Each carries ``params`` (SamplingParams'
fields), and optionally ``stop``, ``response_format`` (OpenAI's: becomes a llama.cpp grammar),
``presence_penalty``, ``frequency_penalty``, ``logprobs``. Load options are LoadOptions' fields
plus ``slots``, ``chunk``, ``max_queue``, ``stream_interval`` (seconds) and ``cache_ram`` (bytes);
``n_ctx`` is the context of one slot."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.runtime import prompt_cache
from edgellm.runtime.batch import (
    DEFAULT_CHUNK,
    DEFAULT_QUEUE,
    DEFAULT_STREAM_INTERVAL_S,
    BadRequest,
    BatchEngine,
    BatchRequest,
    grammar_for,
)
from edgellm.runtime.engine import LoadOptions, SamplingParams
from edgellm.runtime.runner import Emit, error_payload, options_from


class BatchHandler:
    def __init__(self, path: str, options: dict[str, Any]) -> None:
        opts = options_from(LoadOptions, options)
        opts.loras = [(p, s) for p, s in opts.loras]
        slots = int(options.get("slots") or 1)
        per_slot = opts.n_ctx
        if per_slot:
            opts.n_ctx = per_slot * slots
        # The runner is the crash isolation the probe exists for: no second child process.
        self.batch = BatchEngine(
            path,
            dataclasses.replace(opts, probe=False),
            slots=slots,
            chunk=int(options.get("chunk") or DEFAULT_CHUNK),
            max_queue=int(options.get("max_queue", DEFAULT_QUEUE)),
            stream_interval=float(options.get("stream_interval", DEFAULT_STREAM_INTERVAL_S)),
            cache_ram=int(options.get("cache_ram", prompt_cache.DEFAULT_LIMIT)),
        )
        eng = self.batch.engine
        self.info = {
            "n_ctx": self.batch.n_ctx_seq,
            "slots": self.batch.slots_n,
            "n_threads": eng.n_threads,
            "template": eng.template,
            "n_gpu_layers": opts.n_gpu_layers,
            "n_layers": eng.info.block_count,
            "n_embd": self.batch.n_embd,
            "rpc": list(getattr(opts, "rpc", ())),
        }

    def submit(self, req_id: int, op: str, args: dict[str, Any], emit: Emit) -> None:
        if op == "slots":
            busy, waiting = self.batch.busy()
            emit(req_id, "done", slots=self.batch.slots_n, busy=busy, waiting=waiting)
            return
        prompt = _PROMPTS.get(op)
        if prompt is None:
            emit(req_id, "error", error="ProtocolError", message=f"unknown op {op!r}")
            return
        try:
            try:
                tokens = prompt(self.batch.engine, args)
            except EdgeLLMError as err:  # the chat template refused these messages: the request's fault
                raise BadRequest(str(err)) from None
            request = BatchRequest(
                tokens,
                params=options_from(SamplingParams, args.get("params", {})),
                stop=tuple(args.get("stop") or ()),
                grammar=grammar_for(args.get("response_format")),
                presence_penalty=float(args.get("presence_penalty") or 0.0),
                frequency_penalty=float(args.get("frequency_penalty") or 0.0),
                logprobs=args.get("logprobs"),
                embed=op == "embed",
            )
            self.batch.submit(req_id, request, lambda event, **payload: emit(req_id, event, **payload))
        except Exception as err:  # a refusal (too long, queue full, bad grammar, template error)
            emit(req_id, "error", **error_payload(err))

    def cancel(self, req_id: int) -> None:
        self.batch.cancel(req_id)

    def close(self) -> None:
        self.batch.close()


def _text(key: str) -> Any:
    """Tokens of the raw text in ``args[key]``, BOS as the model wants it."""
    return lambda engine, args: engine.tokenize(args[key], add_special=engine._add_bos)


# op -> how its prompt's tokens are made
_PROMPTS = {
    "chat": lambda engine, args: engine.prompt_tokens(args["messages"]),
    "complete": _text("prompt"),
    "embed": _text("input"),
}
