"""Issue #3 point 6: peak memory while converting is bounded by the largest tensor, not the model.

A 340 MB bf16 checkpoint (largest tensor 66 MB) is converted in a child process; its peak RSS,
less that of a child which only reads the config, tokenizer and tensor directory, must stay
under the largest tensor (it is ~4 blocks of 8 MiB in practice). Speed lives in bench/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .builders import write_synthetic

HIDDEN, VOCAB = 1024, 32000
LARGEST = VOCAB * HIDDEN * 2  # token_embd / output in bf16

CHILD = """
import resource, sys
from quantize import convert, prepare
if sys.argv[1] == "prepare":
    prepare(sys.argv[2])
else:
    convert(sys.argv[2], sys.argv[1], sys.argv[3], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak_rss(*args: str) -> int:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return int(proc.stdout.split()[-1])


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("big") / "Llama-2-340M-hf"
    size = write_synthetic(folder, hidden=HIDDEN, ff=2816, layers=8, heads=16, kv_heads=16, vocab=VOCAB)
    return folder, size


@pytest.mark.parametrize("outtype", ["f16", "f32"])
def test_peak_memory_is_bounded_by_the_largest_tensor(big_checkpoint, tmp_path, outtype: str) -> None:  # noqa: ANN001
    folder, size = big_checkpoint
    assert size > 5 * LARGEST
    baseline = _peak_rss("prepare", str(folder))
    out = tmp_path / "out.gguf"
    peak = _peak_rss(outtype, str(folder), str(out))
    assert out.stat().st_size > size * (0.99 if outtype == "f16" else 1.99)
    assert peak - baseline < LARGEST, f"converting used {(peak - baseline) / 1e6:.0f} MB above the baseline"
    os.unlink(out)
