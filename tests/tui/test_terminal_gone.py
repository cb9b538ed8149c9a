"""`edgellm chat` quits when its terminal disappears, instead of spinning a core forever.

The app is started on a pseudo-terminal it does not lead (no SIGHUP will reach it), as under
some terminal multiplexers and benchmark harnesses; then the terminal side is closed."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path


def test_chat_quits_when_the_terminal_closes(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "EDGELLM_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "edgellm", "chat", "default"], stdin=slave, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    shown, deadline = b"", time.time() + 60
    while len(shown) < 2000 and time.time() < deadline:  # the screen is up
        shown += os.read(master, 65536)
    assert len(shown) >= 2000, shown[-500:]  # the app drew its screen before its terminal went away
    os.close(master)
    try:
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
