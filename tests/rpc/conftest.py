"""Real `edgellm worker` processes on loopback, and the models the RPC tests load through them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgellm.runtime import rpc

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    endpoint: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss(self) -> int:
        """VmHWM: the most resident memory the worker ever had (bytes)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_cli(*args: str, budget: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``edgellm ARGS`` in a child process, as a user runs it."""
    cmd = [sys.executable, "-m", "tests.rpc.limited", str(budget), "edgellm"] if budget else [sys.executable, "-m",
                                                                                               "edgellm"]
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def launch(args: list[str], log: Path, budget: int | None = None) -> subprocess.Popen:
    """``python -m edgellm ARGS`` (under tests/rpc/limited.py's memory cap when ``budget``)."""
    cmd = [sys.executable, "-m", "tests.rpc.limited", str(budget), "edgellm"] if budget else [sys.executable, "-m",
                                                                                               "edgellm"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GGML_NO_BACKTRACE": "1"}
    with log.open("w") as out:
        return subprocess.Popen([*cmd, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `edgellm worker` on a free loopback port; returns once it answers the handshake."""
    started: list[WorkerProcess] = []

    def start(*extra: str, budget: int | None = None, port: int | None = None) -> WorkerProcess:
        port = port or free_port()
        log = tmp_path / f"worker-{port}.log"
        proc = launch(["worker", "--port", str(port), "--threads", "1", *extra], log, budget)
        worker = WorkerProcess(proc, f"127.0.0.1:{port}", log)
        started.append(worker)
        deadline = time.monotonic() + 60
        while True:
            try:
                rpc.probe(rpc.Endpoint("127.0.0.1", port), timeout=2)
                return worker
            except rpc.WorkerError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"worker did not start: {log.read_text()}") from None
                time.sleep(0.2)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def big_layers_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer F16 llama of ~420 MB whose feed-forward tensors (23 MB each) are over llama.cpp's
    10 MiB hash-cache threshold and whose attention tensors (8.4 MB) are under it."""
    from tests.store.tiny_gguf import write_tiny_llama

    path = tmp_path_factory.mktemp("rpc-models") / "big-layers-f16.gguf"
    return write_tiny_llama(path, layers=4, embedding=2048, heads=16, kv_heads=16, ffn=5632, vocab=512)


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama-2 checkpoint converted by edgellm's own converter (Q8_0)."""
    from quantize import run
    from tests.quantize import builders as B

    root = tmp_path_factory.mktemp("rpc-converted")
    config = {**B.LLAMA2_CONFIG, "num_hidden_layers": 4}
    folder = B.build(root / "Llama-2-rpc-test-hf", config, B.train_spm())
    (out,) = run(folder, "Q8_0", outdir=root / "out", progress=False)
    return out.path


@pytest.fixture(scope="session")
def many_layers_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-layer F16 llama of ~520 MB: fine-grained enough for a three-way split by free memory."""
    from tests.store.tiny_gguf import write_tiny_llama

    path = tmp_path_factory.mktemp("rpc-models") / "many-layers-f16.gguf"
    return write_tiny_llama(path, layers=12, embedding=1024, heads=8, kv_heads=8, ffn=5632, vocab=512)
