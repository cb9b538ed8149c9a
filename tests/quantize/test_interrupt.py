"""Issue #3 point 7: Ctrl-C while llama.cpp quantizes (on its own thread) stops at once with exit
code 130 and leaves nothing: no output, no temporary or intermediate file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def test_ctrl_c_during_quantization(big_checkpoint, tmp_path) -> None:  # noqa: ANN001
    folder, _ = big_checkpoint
    cmd = [sys.executable, "-m", "edgellm.cli", "quantize", str(folder), "--type", "q4_k_m", "--outdir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") and "Q4_K_M" in p.name for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
