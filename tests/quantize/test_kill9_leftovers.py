"""Issue 16 point 8: a quantize killed with kill -9 leaves its hidden intermediate; the next
quantize into that folder removes it and says how much space that freed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def test_a_quantize_killed_with_kill_9_is_cleaned_up_by_the_next(big_checkpoint, tmp_path: Path) -> None:  # noqa: ANN001
    folder, _ = big_checkpoint
    cmd = [sys.executable, "-m", "edgellm", "quantize", str(folder), "--type", "q8_0", "--outdir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".intermediate") and p.stat().st_size > 1 << 20 for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    size = left.stat().st_size
    mine = tmp_path / "mine.1.gguf"  # a user's file with a number in its name is never touched
    mine.write_bytes(b"GGUF")
    cmd[cmd.index("q8_0")] = "no-such-type"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0  # the sweep runs first, whatever the command then does
    freed = f"{size / 1e6:.1f} MB"
    assert f"removed 1 temporary file left by interrupted runs, freeing {freed}" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.1.gguf"]
