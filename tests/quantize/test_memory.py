"""Issue #3 point 6: peak memory while converting is bounded by the largest tensor, not the model.

A 340 MB bf16 checkpoint (largest tensor 66 MB) is converted in a child process; its peak RSS,
less that of a child which only reads the config, tokenizer and tensor directory, must stay
under the largest tensor (it is ~4 blocks of 8 MiB in practice). Speed lives in bench/."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import BIG_HIDDEN, BIG_VOCAB

LARGEST = BIG_VOCAB * BIG_HIDDEN * 2  # token_embd / output in bf16

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
