"""Bad requests get OpenAI's error shape and the right status, never a traceback: malformed
JSON, wrong types, an unknown model, n > 1, a prompt longer than the context, an oversized body,
a missing or wrong API key, and a full queue (503 with Retry-After)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.server.conftest import MODEL, Server, serve

KEY = "sk-test-0123456789"
CTX = 512


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ("--ctx", str(CTX), "--parallel", "1", "--queue", "0", "--api-key", KEY)
    with serve(tmp_path_factory.mktemp("serve"), *args) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
        yield client


def chat(**overrides: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **overrides}


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]


def test_malformed_json(http: httpx.Client) -> None:
    err = error_of(http.post("/chat/completions", content=b'{"model": "default", "messages": [',
                             headers={"Content-Type": "application/json"}), 400)  # fmt: skip
    assert "JSON" in err["message"] and err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(temperature="hot"), "temperature"),
        (chat(messages="Hi"), "messages"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "wizard", "content": "Hi"}]), "messages.0.role"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(n=2), "n"),
        (chat(repeat_penalty=0), "repeat_penalty"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(response_format={"type": "xml"}), "response_format.type"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "model"),
    ],
)
def test_wrong_values_name_the_parameter(http: httpx.Client, body: dict, param: str) -> None:
    assert error_of(http.post("/chat/completions", json=body), 400)["param"] == param


def test_unknown_model_lists_the_served_ones(http: httpx.Client) -> None:
    err = error_of(http.post("/chat/completions", json=chat(model="gpt-4o")), 404)
    assert "gpt-4o" in err["message"] and MODEL in err["message"] and err["param"] == "model"
    assert error_of(http.post("/embeddings", json={"model": "nope", "input": "x"}), 404)["code"] == "model_not_found"


def test_prompt_longer_than_the_context(http: httpx.Client) -> None:
    err = error_of(http.post("/chat/completions", json=chat(messages=[{"role": "user", "content": "word " * 2000}])),
                   400)  # fmt: skip
    assert err["code"] == "context_length_exceeded" and str(CTX) in err["message"]


def test_oversized_body_is_refused_unread(http: httpx.Client) -> None:
    huge = json.dumps(chat(messages=[{"role": "user", "content": "x" * (9 << 20)}])).encode()
    assert error_of(http.post("/chat/completions", content=huge), 413)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b" " * (1 << 20)

    assert error_of(http.post("/chat/completions", content=chunked()), 413)["code"] == "request_too_large"


def test_api_key(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        err = error_of(httpx.get(server.url + "/models", headers=headers), 401)
        assert err["code"] == "invalid_api_key" and KEY not in err["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in openai.OpenAI(base_url=server.url, api_key=KEY).models.list()] == [MODEL]
    assert httpx.get(server.root + "/health").json()["status"] == "ok"  # open to load balancers
    assert KEY not in "".join(server.log)


def test_no_cors_unless_asked(server: Server) -> None:
    preflight = httpx.options(server.url + "/chat/completions", headers={
        "Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert not [h for h in preflight.headers if h.startswith("access-control-")]


def test_full_queue_is_503_with_retry_after(server: Server, http: httpx.Client) -> None:
    """One slot, no queue: while a stream holds the slot, the next request is turned away."""
    counting = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 400, "temperature": 0,
                "stream": True}  # greedy, it goes on counting: the slot stays taken, however fast the machine
    with http.stream("POST", "/completions", json=counting) as first:
        lines = first.iter_lines()  # held: a dropped line iterator closes the connection
        started = any(line.startswith("data: ") for line in lines)  # a token: the slot is taken
        assert started
        refused = http.post("/chat/completions", json=chat())
        err = error_of(refused, 503)
        assert err["code"] == "queue_full" and refused.headers["Retry-After"].isdigit()
    server.wait_idle()  # the stream was abandoned: its slot is freed
    assert http.post("/chat/completions", json=chat()).status_code == 200
