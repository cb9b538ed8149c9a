"""bench/report.py: how a benchmark script ends when stopped."""

from __future__ import annotations

import pytest

from bench import report


def test_a_benchmark_stopped_with_ctrl_c_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        report.run(main)
    assert stop.value.code == 130
    assert capsys.readouterr().err == "interrupted: no results written\n"
    report.run(lambda: None)  # a run that ends normally returns
