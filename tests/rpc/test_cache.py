"""`edgellm worker --cache`: the next load sends hashes instead of the weights llama.cpp caches
(tensors over 10 MiB), counted in bytes on the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.models.gguf_header import read_header
from tests.rpc.conftest import run_cli
from tests.rpc.proxy import CountingProxy

HASH_THRESHOLD = 10 << 20  # llama.cpp's: weights above it are offered by hash first


def test_second_load_sends_no_cached_weights(big_layers_model: Path, start_worker, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    worker = start_worker("--cache", str(cache))
    host, port = worker.endpoint.split(":")
    proxy = CountingProxy((host, int(port)))
    args = ["run", str(big_layers_model), "hi", "--rpc", proxy.endpoint, "--gpu-layers", "all", "--max-tokens", "8",
            "--temperature", "0", "--ctx", "256", "--threads", "1"]  # fmt: skip
    try:
        first = run_cli(*args)
        sent_first = proxy.reset()
        second = run_cli(*args)
        sent_second = proxy.reset()
    finally:
        proxy.close()
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert second.stdout == first.stdout  # the cached weights are the same weights
    big = [t.n_bytes for t in read_header(big_layers_model).tensors if t.name.startswith("blk.")
           and t.n_bytes > HASH_THRESHOLD]  # fmt: skip
    small = sum(t.n_bytes for t in read_header(big_layers_model).tensors if t.name.startswith("blk.")) - sum(big)
    assert len(big) == 12 and sorted(p.stat().st_size for p in cache.iterdir()) == sorted(big)
    assert sent_first > sum(big) + small
    # the second load sent every weight but the cached ones (plus hashes, graphs and the prompt)
    assert sent_first - sent_second == pytest.approx(sum(big), rel=0.01)
    assert sent_second < sent_first / 2
