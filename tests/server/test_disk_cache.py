"""`edgellm serve --cache-size`: a conversation outlives a restart of the server. Ctrl-C makes
the runner write what it holds to the disk KV store; the next server reads the conversation back
when its next turn comes (usage.prompt_tokens_details.cached_tokens), instead of evaluating it."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server.conftest import serve

STORY = "Here is a short story about a cat who lived in a library. " * 6 + "The capital of France is"
ARGS = ("--ctx", "1024", "--parallel", "2", "--cache-size", "1GB")


def complete(root: str, prompt: str) -> dict:
    body = {"model": "default", "prompt": prompt, "max_tokens": 8, "temperature": 0}
    reply = httpx.post(root + "/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_conversation_outlives_a_restart(tmp_path: Path) -> None:
    with serve(tmp_path, *ARGS) as srv:
        first = complete(srv.root, STORY)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert list((tmp_path / "xdg_cache_home" / "edgellm" / "kv").glob("*.kv"))  # written at Ctrl-C
    with serve(tmp_path, *ARGS) as srv:
        again = complete(srv.root, STORY + first["choices"][0]["text"] + " The capital of Italy is")
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1


def test_off_by_default(tmp_path: Path) -> None:
    with serve(tmp_path, "--ctx", "1024", "--parallel", "2") as srv:
        complete(srv.root, STORY)
    assert not list((tmp_path / "xdg_cache_home").glob("**/*.kv"))
