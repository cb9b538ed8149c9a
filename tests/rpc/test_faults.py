"""Faults at start (unreachable, busy, another version) are one line naming the worker; a worker
killed mid-answer ends that answer with an error and the next message says which is missing."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgellm.errors import EdgeLLMError
from edgellm.runtime import rpc
from edgellm.runtime.client import RemoteEngine, RunnerDied
from edgellm.runtime.engine import LoadOptions, SamplingParams
from tests.limited import one_line_error
from tests.rpc.conftest import free_port, launch, run_cli


def test_unreachable_worker_is_one_line(default_model: Path) -> None:
    port = free_port()  # nothing listens there
    line = one_line_error(run_cli("run", str(default_model), "hi", "--rpc", f"127.0.0.1:{port}"))
    assert f"worker 127.0.0.1:{port} is not reachable" in line and "edgellm worker" in line


@pytest.fixture
def fake_worker() -> Iterator[callable]:
    """A server that speaks only the RPC handshake, replying as a worker of another version would:
    a worker built from another llama.cpp cannot run here, its first message can."""
    servers: list[socket.socket] = []

    def start(reply: bytes | None) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(1 + 8 + 24)  # HELLO: cmd, size, connection capabilities
                    if reply is not None:
                        conn.sendall(struct.pack("<Q", len(reply)) + reply)
                        conn.recv(1)

        threading.Thread(target=serve, daemon=True).start()
        return server.getsockname()[1]

    yield start
    for server in servers:
        server.close()


def test_newer_protocol_worker_is_a_version_error(default_model: Path, fake_worker) -> None:
    port = fake_worker(bytes([8, 0, 0, 0]) + bytes(24))
    started = time.monotonic()
    line = one_line_error(run_cli("run", str(default_model), "hi", "--rpc", f"127.0.0.1:{port}", timeout=60))
    assert time.monotonic() - started < 30  # not a hang
    assert "speaks RPC protocol 8.0.0" in line and "7.0.0" in line and "same edgellm version" in line


def test_older_protocol_worker_is_a_version_error(default_model: Path, fake_worker) -> None:
    """A v3-era server refuses the 24-byte HELLO by hanging up."""
    port = fake_worker(None)
    line = one_line_error(run_cli("run", str(default_model), "hi", "--rpc", f"127.0.0.1:{port}", timeout=60))
    assert "closed the connection at the handshake" in line


def test_busy_worker_is_named(default_model: Path, start_worker) -> None:
    """A worker serves one client at a time; llama.cpp would wait for it forever."""
    worker = start_worker()
    host, port = worker.endpoint.split(":")
    with socket.create_connection((host, int(port))) as other_client:
        other_client.sendall(struct.pack("<BQ", 14, 24) + bytes(24))
        other_client.recv(8 + 28)
        started = time.monotonic()
        line = one_line_error(run_cli("run", str(default_model), "hi", "--rpc", worker.endpoint, timeout=60))
        assert time.monotonic() - started < 30
    assert worker.endpoint in line and "serving another client" in line


def test_protocol_is_the_installed_libraries(start_worker) -> None:
    import llama_cpp

    header = (Path(llama_cpp.__file__).parents[1] / "include" / "ggml-rpc.h").read_text()
    numbers = tuple(int(re.search(rf"RPC_PROTO_{part}_VERSION\s+(\d+)", header).group(1))
                    for part in ("MAJOR", "MINOR", "PATCH"))  # fmt: skip
    assert numbers == rpc.PROTOCOL
    worker = start_worker()
    assert rpc.probe(rpc.Endpoint.parse(worker.endpoint)).version == rpc.PROTOCOL


def test_worker_killed_mid_answer(default_model: Path, start_worker) -> None:
    worker = start_worker()
    options = LoadOptions(n_ctx=2048, n_threads=1, flash_attn=False, rpc=(worker.endpoint,), n_gpu_layers=-1)
    params = SamplingParams(temperature=0, max_tokens=1500)
    messages = [{"role": "user", "content": "Tell me a very long story about the sea."}]
    with RemoteEngine(default_model, options) as engine:
        pieces: list[str] = []
        turn = engine.chat(messages, params)
        with pytest.raises(RunnerDied) as died:
            for piece in turn:
                pieces.append(piece)
                if len(pieces) == 5:
                    worker.proc.kill()
                    killed = time.monotonic()
        assert time.monotonic() - killed < 15  # the answer ends with an error within seconds
        assert len(pieces) >= 5 and turn.text.startswith("".join(pieces[:5]))  # what was shown is kept
        assert "runner died" in str(died.value)
        with pytest.raises(EdgeLLMError, match=rf"worker {worker.endpoint} is not reachable"):
            engine.chat(messages, SamplingParams(temperature=0, max_tokens=4)).result()
        start_worker(port=int(worker.endpoint.rsplit(":", 1)[1]))  # plugged back in
        assert engine.chat(messages, SamplingParams(temperature=0, max_tokens=4)).result()


def test_port_in_use_is_one_line(start_worker) -> None:
    worker = start_worker()
    line = one_line_error(run_cli("worker", "--port", worker.endpoint.rsplit(":", 1)[1]))
    assert "already in use" in line


def test_listening_beyond_loopback_warns(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    proc = launch(["worker", "--host", "0.0.0.0", "--port", str(port), "--threads", "1"], log)
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        text = log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "warning: listening on 0.0.0.0" in text and "no authentication" in text and "SSH tunnel" in text


@pytest.mark.parametrize(("value", "why"), [("host:99999", "port must be"), ("[::1]:50052", "IPv6"),
                                            ("a:1,a:1", "listed twice"), (",", "at least one")])  # fmt: skip
def test_bad_rpc_value(default_model: Path, value: str, why: str) -> None:
    done = run_cli("run", str(default_model), "hi", "--rpc", value)
    assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr
