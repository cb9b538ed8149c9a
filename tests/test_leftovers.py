"""Issue 16 point 8: temporary files of a killed edgellm are removed when the next command starts
(the space freed is said once), files of a live process and resumable downloads stay."""

from __future__ import annotations

import os
import subprocess
import sys

from edgellm import paths
from edgellm.models.store import STAGING, Store


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def edgellm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True, timeout=120)


def test_store_leftovers_of_dead_processes_go_live_ones_stay() -> None:
    staging = Store().root / STAGING
    staging.mkdir(parents=True)
    gone, alive = dead_pid(), os.getpid()
    stale = [staging / f"tiny-Q8_0.{gone}.tmp", staging / f"tiny-Q8_0.{gone}.gguf",
             paths.data_dir() / f".chats.db.{gone}.tmp"]  # fmt: skip
    kept = [staging / f"tiny-Q8_0.{alive}.tmp", staging / "0123abcd.part", paths.data_dir() / "notes.123.tmp"]
    for i, path in enumerate(stale + kept):
        path.write_bytes(b"x" * 1000 * (i + 1))
    runners = paths.runtime_dir() / "runners"
    runners.mkdir(parents=True)
    (runners / f"{gone}.json").write_text("{}")
    done = edgellm("list")
    assert done.returncode == 0
    assert "removed 4 temporary files left by interrupted runs, freeing 6.0 KB" in done.stderr
    assert not any(p.exists() for p in stale) and not (runners / f"{gone}.json").exists()
    assert all(p.exists() for p in kept), "a live writer's file, a resumable download, a user's file"
    assert "interrupted download" in done.stdout  # the .part is still offered for resuming
    assert "removed" not in edgellm("list").stderr, "said once, when there was something to remove"
