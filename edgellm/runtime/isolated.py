"""One llama.cpp job in a child process: a benchmark setting, an evaluation, a quantization report.

The chat-style front ends talk to a long-lived runner (edgellm.runtime.runner); batch jobs that
load a model, compute and exit need less: ``run(target, request)`` starts
``python -m edgellm.runtime.isolated module:function``, hands it ``request`` as JSON on stdin
and returns the JSON the function returned. Its progress lines pass through to our stderr. If
llama.cpp kills it, the caller gets one line naming the model file, the signal and llama.cpp's
last error, as a runner's death reads (``RunnerDied``)."""

from __future__ import annotations

import collections
import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.runtime import llama_log
from edgellm.runtime.client import RunnerDied, background, signal_name


def run(target: str, request: dict[str, Any], *, path: Path | str, what: str = "job") -> dict[str, Any]:
    """Run ``target`` ("module:function", called with ``request``) in a child; its result.
    An EdgeLLMError raised there is raised here with the same message."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgellm.runtime.isolated", target],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        start_new_session=True,  # the terminal's Ctrl-C is the parent's: it kills the child itself
    )
    tail: collections.deque[str] = collections.deque(maxlen=200)

    def forward() -> None:  # as it comes, not by lines: progress redraws itself with \r
        partial = ""
        while chunk := proc.stderr.read1(1 << 14):  # type: ignore[union-attr]
            text = chunk.decode("utf-8", errors="replace")
            sys.stderr.write(text)
            sys.stderr.flush()
            *lines, partial = (partial + text).split("\n")
            tail.extend(lines)
        tail.append(partial)

    reader = background(forward, "isolated-log")
    try:  # not communicate(): it would read stderr too, racing the forwarding thread for the progress
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps(request).encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        out = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait()
    except BaseException:  # Ctrl-C: the child goes too, then the interrupt goes on up
        proc.kill()
        proc.wait()
        raise
    reader.join(timeout=2)
    lines = out.decode("utf-8", errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "error" in answer:
        raise EdgeLLMError(answer["error"])
    if proc.returncode != 0 or "result" not in answer:
        why = llama_log.last_error(tail)
        how = f"{path}: the {what} process died ({signal_name(proc.returncode)})"
        raise RunnerDied(how + (f": {why}" if why else ""))
    return answer["result"]


def _child(target: str) -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever C code prints cannot corrupt the answer
    module, _, name = target.partition(":")
    request = json.loads(sys.stdin.read())
    try:
        result = getattr(importlib.import_module(module), name)(request)
    except EdgeLLMError as err:
        out.write(json.dumps({"error": str(err)}) + "\n")
        return 1
    out.write(json.dumps({"result": result}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
