"""`edgellm bench`: llama-bench's pp/tg rows, one per setting, each measured in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgellm.cli import main
from edgellm.measure.benchmark import BenchRow

SMALL = ["-p", "32", "-n", "8", "-r", "2"]


def test_two_thread_counts_give_two_json_rows(default_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(default_model), "--threads", "1,2", *SMALL, "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [r["n_threads"] for r in rows] == [1, 2]
    for r in rows:
        assert r["model_filename"] == str(default_model) and r["file_type"] == "Q4_1"
        assert (r["pp"]["test"], r["tg"]["test"]) == ("pp32", "tg8")
        for test in (r["pp"], r["tg"]):
            assert len(test["samples_ts"]) == 2 and min(test["samples_ts"]) > 0
            assert test["avg_ts"] == pytest.approx(np.mean(test["samples_ts"]))
            assert test["stddev_ts"] == pytest.approx(np.std(test["samples_ts"], ddof=1))
            assert test["samples_ts"] == pytest.approx([test["n_tokens"] * 1e9 / ns for ns in test["samples_ns"]])
        assert len(r["ttft_samples_ms"]) == 2 and r["ttft_avg_ms"] > 0
        assert 16 <= r["ttft_prompt_tokens"] <= 32
        assert r["peak_rss_bytes"] > r["model_size"]  # the mapped weights are all read
        assert BenchRow.from_json(r).to_json() == r
    assert "benchmark 2/2: threads 2" in err


def test_table_like_llama_bench(default_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "default", "--threads", "2", "--gpu-layers", "0", "-p", "16", "-n", "4", "-r", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:6] == ["model", "size", "params", "backend", "threads", "ngl"]
    assert header[6:8] == ["pp16 t/s", "tg4 t/s"] and header[-1] == "peak RSS"
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "llama 134.5M Q4_1" and cells[4] == "2" and " ± " in cells[6]


def test_bad_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    assert main(["bench", str(bad), *SMALL]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "not a GGUF file" in err


@pytest.mark.parametrize("arg", [["--threads", "1,x"], ["--threads", "0"], ["-r", "0"]])
def test_bad_lists_are_usage_errors(arg: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "default", *arg])
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
