"""Issue #3 point 7: each phase shows progress with rate and ETA (redrawn in place on a terminal,
one summary line per phase in a log)."""

from __future__ import annotations

import io

from edgellm.cli import main
from quantize.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_has_percent_rate_and_eta(monkeypatch) -> None:  # noqa: ANN001
    now = [0.0]
    monkeypatch.setattr("quantize.progress.time.perf_counter", lambda: now[0])
    out = Terminal()
    with Progress("f16", 4_000_000, stream=out) as bar:
        now[0] = 1.0
        bar.update(1_000_000)
        now[0] = 2.0
        bar.update(1_000_000)
        now[0] = 3.0
    text = out.getvalue()
    first = text.split("\r")[1]
    assert "25%" in first and "1.0 MB/4.0 MB" in first and "1.0 MB/s" in first and "ETA 0:03" in first
    assert text.rstrip().endswith("f16          done: 4.0 MB in 0:03 (1.3 MB/s)\x1b[K")


def test_each_phase_reports_in_a_log(models, tmp_path, capsys) -> None:  # noqa: ANN001
    assert main(["quantize", str(models("llama2-chat").folder), "--type", "q8_0,q4_0", "--outdir", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    phases = [line.split()[0] for line in err if " done: " in line]
    assert phases == ["bf16", "q8_0", "q4_0"]  # the bf16 weights' intermediate, then each type
    assert all(line.rstrip().endswith("/s)") for line in err if " done: " in line)
