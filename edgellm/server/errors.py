"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the HTTP
status clients act on (400 fix the request, 401 key, 404 model, 413 body, 503 retry later)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

RETRY_AFTER_S = 1

# runner error class name -> (HTTP status, OpenAI error type, code)
RUNNER_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "ContextOverflow": (400, "invalid_request_error", "context_length_exceeded"),
    "BadRequest": (400, "invalid_request_error", None),
    "QueueFull": (503, "server_error", "queue_full"),
    "RunnerDied": (503, "server_error", "model_restarting"),
    "ModelUnavailable": (503, "server_error", "model_unavailable"),
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 503: "server_error"}  # fmt: skip


class APIError(Exception):
    """An error answer: raised anywhere in a request, rendered by the app's handler."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else None
        if self.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    @classmethod
    def from_runner(cls, event: dict[str, Any]) -> APIError:
        """A runner's ``error`` event; anything unexpected is a 500 that still says what failed."""
        status, kind, code = RUNNER_ERRORS.get(event.get("error", ""), (500, "server_error", None))
        return cls(status, event.get("message") or "the model failed", type=kind, code=code)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    first = err.errors()[0] if err.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON: " + str(first.get("ctx", {}).get("error", "")), None
    param = ".".join(loc) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid value')}", param


def install(app: FastAPI) -> None:
    """Every error, expected or not, leaves as OpenAI's shape; no traceback reaches a client."""

    @app.exception_handler(APIError)
    async def _api(_: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return APIError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return APIError(err.status_code, str(err.detail)).response()

    @app.exception_handler(Exception)
    async def _bug(_: Request, err: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(err).__name__}: {err}").response()
