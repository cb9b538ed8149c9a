"""The OpenAI routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Streaming follows OpenAI's wire format, which clients (the `openai` package, LangChain, web UIs)
parse strictly: SSE ``data:`` chunks with one ``id`` and ``created``, the role in the first
delta, ``finish_reason`` in the last chunk, then (with ``stream_options.include_usage``) a chunk
with empty ``choices`` and ``usage``, then ``data: [DONE]``. An error after the headers went out
is a ``data: {"error": ...}`` chunk, which the `openai` client raises as APIError."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from edgellm.server.errors import APIError
from edgellm.server.pool import EventStream, ServedModel
from edgellm.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

PING_S = 2.0  # an SSE comment this often while a request waits: a gone client is noticed

router = APIRouter()


def served(request: Request, name: str) -> ServedModel:
    models: dict[str, ServedModel] = request.app.state.models
    model = models.get(name)
    if model is None:
        raise APIError(404, f"model {name!r} is not served here; served: {', '.join(models)}",
                       param="model", code="model_not_found")  # fmt: skip
    return model


def _runner_args(body: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """OpenAI's sampling parameters as the runner's (SamplingParams fields and the extras).
    OpenAI's defaults, not the CLI's: no penalty unless asked (``frequency_penalty``,
    ``presence_penalty``, or llama-server's ``repeat_penalty``), as clients that set
    ``temperature: 0`` expect the plain greedy answer."""
    params: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "max_tokens": body.token_limit or -1,
        "seed": body.seed,
        "repeat_penalty": body.repeat_penalty or 1.0,
    }
    return {
        "params": params,
        "stop": body.stops(),
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
    }


def _usage(done: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = done.get("prompt_tokens", 0), done.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": done.get("cached_tokens", 0)},
    }


def _finish(done: dict[str, Any]) -> str:
    return "length" if done.get("finish_reason") == "length" else "stop"


class Answer:
    """The objects of one answer, chat or text completion (same id and created throughout)."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "edgellm",
        }

    def _choice(self, text: str | None, logprobs: list[dict[str, Any]] | None, finish: str | None,
                *, role: bool = False) -> dict[str, Any]:  # fmt: skip
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": {"content": logprobs} if logprobs else None,
                "finish_reason": finish}  # fmt: skip

    def chunk(self, text: str | None = None, logprobs: list[dict[str, Any]] | None = None,
              finish: str | None = None, *, role: bool = False) -> dict[str, Any]:  # fmt: skip
        return {**self.head, "choices": [self._choice(text, logprobs, finish, role=role)]}

    def usage_chunk(self, done: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": _usage(done)}

    def whole(self, text: str, logprobs: list[dict[str, Any]], done: dict[str, Any]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                      "logprobs": {"content": logprobs} if logprobs else None, "finish_reason": _finish(done)}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _finish(done)}  # fmt: skip
        obj = "chat.completion" if self.chat else "text_completion"
        return {**self.head, "object": obj, "choices": [choice], "usage": _usage(done)}


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _stream(stream: EventStream, answer: Answer, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE bytes; the events that arrived together go out in one write. Leaving early (the
    client went away: Starlette cancels this generator) frees the sequence in the runner."""
    try:
        yield _sse(answer.chunk(role=True)) if answer.chat else b": accepted\n\n"
        async for batch in stream.batches(idle=PING_S):
            if not batch:
                yield b": ping\n\n"
                continue
            out = []
            for event in batch:
                kind = event["event"]
                if kind == "piece":
                    out.append(_sse(answer.chunk(event["text"], event.get("logprobs"))))
                elif kind == "done":
                    out.append(_sse(answer.chunk(None if answer.chat else "", finish=_finish(event))))
                    if include_usage:
                        out.append(_sse(answer.usage_chunk(event)))
                    out.append(b"data: [DONE]\n\n")
                elif kind == "error":
                    out.append(_sse(APIError.from_runner(event).body()))
            yield b"".join(out)
    finally:
        stream.cancel()


async def _collect(stream: EventStream, request: Request) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A whole answer; a client gone while it is generated cancels it."""
    parts: list[str] = []
    logprobs: list[dict[str, Any]] = []
    try:
        async for batch in stream.batches(idle=PING_S):
            if not batch and await request.is_disconnected():
                break
            for event in batch:
                if event["event"] == "piece":
                    parts.append(event["text"])
                    logprobs.extend(event.get("logprobs") or ())
                elif event["event"] == "error":
                    raise APIError.from_runner(event)
                elif event["event"] == "done":
                    return "".join(parts), logprobs, event
    finally:
        stream.cancel()
    return "".join(parts), logprobs, {"finish_reason": "cancelled"}


async def _answer(request: Request, body: ChatCompletionRequest | CompletionRequest, op: str,
                  args: dict[str, Any]) -> Response:  # fmt: skip
    model = served(request, body.model)
    stream = await model.open(op, args)
    answer = Answer(op == "chat", model.name)
    if body.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_stream(stream, answer, body.include_usage), media_type="text/event-stream",
                                 headers=headers)  # fmt: skip
    text, logprobs, done = await _collect(stream, request)
    return JSONResponse(answer.whole(text, logprobs, done))


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    args = _runner_args(body)
    args["messages"] = [m.as_template_message() for m in body.messages]
    if body.response_format is not None:
        args["response_format"] = body.response_format.for_runner()
    if body.logprobs:
        args["logprobs"] = body.top_logprobs or 0
    return await _answer(request, body, "chat", args)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _answer(request, body, "complete", {**_runner_args(body), "prompt": body.text})


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    model = served(request, body.model)

    async def one(text: str) -> tuple[list[float], int]:
        stream = await model.open("embed", {"input": text})
        vector: list[float] = []
        async for batch in stream.batches():
            for event in batch:
                if event["event"] == "embedding":
                    vector = event["embedding"]
                elif event["event"] == "error":
                    raise APIError.from_runner(event)
                elif event["event"] == "done":
                    return vector, event.get("prompt_tokens", 0)
        raise APIError(500, "the runner ended the embedding without a vector")

    results = await asyncio.gather(*(one(text) for text in body.inputs))
    encode = (lambda v: base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()) \
        if body.encoding_format == "base64" else (lambda v: v)  # fmt: skip
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, (v, _) in enumerate(results)]
    tokens = sum(n for _, n in results)
    return JSONResponse({"object": "list", "data": data, "model": model.name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip


def _model_card(model: ServedModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": "edgellm"}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(m) for m in request.app.state.models.values()]}


@router.get("/v1/models/{name:path}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    return _model_card(served(request, name))
