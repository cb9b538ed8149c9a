"""The server outlives its clients and its runner: a client that goes away mid-stream frees its
sequence at once, and a runner killed mid-stream fails only the requests in flight (an error
chunk for a stream, 503 for the others) before a fresh runner answers the next one. Ctrl-C
(the fixture's teardown) stops the server and its runners cleanly."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.server.conftest import MODEL, Server, serve

ENDLESS = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the model goes on counting (a chat answer stops at 20)
MANY = 2000  # tokens: minutes of generation, so a request that ends early was ended by the test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("serve"), "--ctx", "2560", "--parallel", "2") as srv:
        yield srv


def first_token(lines: Iterator[str]) -> None:
    for line in lines:
        if line.startswith("data: ") and '"text":"' in line and '"text":""' not in line:
            return
    pytest.fail("the stream ended before its first token")


def test_disconnect_frees_the_sequence(server: Server) -> None:
    body = {"model": MODEL, "prompt": ENDLESS, "max_tokens": MANY, "temperature": 0, "stream": True}
    with httpx.Client(timeout=300) as http, http.stream("POST", server.url + "/completions", json=body) as r:
        lines = r.iter_lines()  # held: a dropped line iterator closes the connection
        first_token(lines)
        assert server.health()["busy"] == 1
    server.wait_idle(timeout=20)  # not minutes: the sequence was freed when the client left


def test_runner_killed_mid_stream(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
    (runner,) = server.runner_pids()
    stream = client.completions.create(model=MODEL, prompt=ENDLESS, max_tokens=MANY, temperature=0, stream=True)
    chunks = iter(stream)
    while not next(chunks).choices[0].text:
        pass
    outcome: dict[str, BaseException] = {}

    def whole() -> None:
        try:
            client.completions.create(model=MODEL, prompt=ENDLESS, max_tokens=MANY, temperature=0)
        except BaseException as err:  # noqa: BLE001 - recorded for the assertion below
            outcome["error"] = err

    waiting = threading.Thread(target=whole)
    waiting.start()
    deadline = time.monotonic() + 120
    while server.health()["busy"] < 2:  # both requests are generating
        assert time.monotonic() < deadline, server.health()
        time.sleep(0.05)
    os.kill(runner, signal.SIGKILL)
    with pytest.raises(openai.APIError) as streamed:
        for _ in chunks:
            pass
    assert "runner died (SIGKILL)" in str(streamed.value) and "SmolLM2" in str(streamed.value)
    waiting.join(300)
    err = outcome.get("error")
    assert isinstance(err, openai.InternalServerError) and err.status_code == 503, err
    assert err.response.headers["Retry-After"].isdigit()
    reply = client.completions.create(model=MODEL, prompt=ENDLESS, max_tokens=3, temperature=0)
    assert reply.choices[0].text
    assert server.runner_pids() and server.runner_pids() != [runner]
