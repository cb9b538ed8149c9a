"""A real `edgellm serve` process per test module, on the default model, over loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

START_TIMEOUT_S = 180  # the machine is shared: loading can take a while
MODEL = "default"
# one llama.cpp thread: on a shared 2-core machine two threads wait on each other at every barrier
# (measured here under load: 15 tok/s with 1 thread, 1 with 2)
THREADS = "1"


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/v1
    log: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def runner_pids(self) -> list[int]:
        children = psutil.Process(self.proc.pid).children()
        return [c.pid for c in children if "edgellm.runtime.runner" in " ".join(c.cmdline())]

    def health(self) -> dict:
        return httpx.get(self.root + "/health", timeout=30).json()

    def wait_idle(self, timeout: float = 30.0) -> float:
        """Seconds until no slot is busy and nothing waits (fails after ``timeout``)."""
        start = time.monotonic()
        while (health := self.health())["busy"] or health["waiting"]:
            if time.monotonic() - start > timeout:
                pytest.fail(f"the server is still busy after {timeout:g} s: {health}")
            time.sleep(0.05)
        return time.monotonic() - start


@contextmanager
def serve(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start `edgellm serve default --port 0 ARGS`; stop it with SIGINT (Ctrl-C) afterwards and
    check that it exits cleanly, its runners with it."""
    environ = {**os.environ, **(env or {})}
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        environ[var] = str(tmp / var.lower())
    environ.pop("EDGELLM_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgellm", "serve", MODEL, "--port", "0", "--threads", THREADS, *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ,
    )
    log: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            log.append(line)
            match = re.search(r"serving .* at (http://\S+)", line)
            if match and not url:
                url.append(match.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(START_TIMEOUT_S):
        proc.kill()
        pytest.fail("edgellm serve did not start:\n" + "".join(log))
    server = Server(proc, url[0], log)
    runners = server.runner_pids()
    try:
        yield server
    finally:
        runners += server.runner_pids()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("edgellm serve did not stop on Ctrl-C:\n" + "".join(log[-20:]))
        assert code == 0, "".join(log[-20:])
        assert "Traceback" not in "".join(log), "".join(log)
        assert not [p for p in runners if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
