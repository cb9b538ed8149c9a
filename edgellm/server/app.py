"""The ASGI application: the OpenAI routes behind an API key check, a body size limit, opt-in
CORS, and ``GET /health`` (open, for load balancers: no model names, only slot counts)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from edgellm import __version__
from edgellm.server import errors
from edgellm.server.errors import APIError
from edgellm.server.openai_api import router
from edgellm.server.pool import ServedModel

MAX_BODY = 8 << 20  # bytes: a long conversation is ~1 MB; a larger body is refused with 413

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before anything parses them: a
    declared Content-Length is checked at once, a chunked body while it is read (memory stays
    bounded either way)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        err = APIError(413, f"the request body is larger than {self.limit} bytes", code="request_too_large")
        await err.response()(scope, receive, send)


def require_key(request: Request) -> None:
    """With an API key set, every /v1 request needs ``Authorization: Bearer KEY`` (compared in
    constant time, so response timing leaks nothing about the key)."""
    key: str | None = request.app.state.api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise APIError(401, "missing or wrong API key: send the header `Authorization: Bearer KEY`",
                       code="invalid_api_key")  # fmt: skip


def create_app(
    models: Iterable[ServedModel],
    *,
    api_key: str | None = None,
    cors: Iterable[str] = (),
    max_body: int = MAX_BODY,
) -> FastAPI:
    app = FastAPI(title="edgellm", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models = {m.name: m for m in models}
    app.state.api_key = api_key or None
    errors.install(app)
    app.include_router(router, dependencies=[Depends(require_key)])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        counts = {"slots": 0, "busy": 0, "waiting": 0}
        for model in app.state.models.values():
            answer = await model.ask("slots")
            for key in counts:
                counts[key] += answer[key]
        return {"status": "ok", **counts}

    app.add_middleware(BodyLimit, limit=max_body)
    origins = list(cors)
    if origins:  # outermost, so that refusals carry the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    return app
