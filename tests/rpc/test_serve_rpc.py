"""`edgellm serve --rpc`: the server's batch runner loads its model over a real loopback worker and
answers as the same server without it (flash attention off on both, as llama.cpp's RPC split
needs for identical numerics), with the weights in the worker's memory."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server.conftest import serve

PROMPT = {"model": "default", "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}


def _complete(url: str) -> str:
    answer = httpx.post(url + "/completions", json=PROMPT, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["text"]


def test_serve_over_a_worker_answers_as_local(start_worker, tmp_path: Path) -> None:
    worker = start_worker()
    before = worker.peak_rss()
    with serve(tmp_path / "local", "--flash-attn", "off", "--parallel", "1") as local:
        expected = _complete(local.url)
    with serve(tmp_path / "split", "--flash-attn", "off", "--parallel", "1", "--rpc", worker.endpoint) as split:
        assert _complete(split.url) == expected and expected.strip()
    assert worker.peak_rss() - before > 15 << 20  # the layers were in the worker's memory
