"""Run the real CLI in a child process under a 4 GB address-space limit, as a hostile input test
needs it: the bad file must end in one clean error line and exit code 1, never in a traceback, a
MemoryError or a signal, and within a bounded time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ADDRESS_SPACE = 4 << 30
TIME_LIMIT_S = 300  # a bound that fails the test instead of hanging it, not a timing assert

_CHILD = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
from edgellm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``edgellm ARGS`` in a child limited to 4 GB of address space."""
    return subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True,
                          timeout=TIME_LIMIT_S)  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The single `edgellm: error:` line of a run that failed cleanly with exit code 1."""
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgellm: error: "), done.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
