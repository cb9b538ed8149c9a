"""Load a model once in a child process before loading it in ours.

Some GGUF files parse fine yet make llama.cpp abort or segfault (impossible hyperparameters,
tensor types a build lacks). A crash in a child costs nothing; in the caller it would take the
CLI or the TUI down with it. A file that loaded once is remembered (path, size, mtime, build),
so the probe is paid once per file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from edgellm import paths
from edgellm.errors import BadModelFile
from edgellm.runtime import llama_log

_TIMEOUT_S = 600


def _key(path: Path, n_gpu_layers: int) -> str:
    import llama_cpp

    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{n_gpu_layers}|{llama_cpp.__version__}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _cache_file() -> Path:
    return paths.cache_dir() / "probed.json"


def _load_cache() -> dict[str, bool]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def probe(path: Path, n_gpu_layers: int = 0) -> None:
    """Raise BadModelFile if loading ``path`` and decoding one token crashes llama.cpp."""
    key = _key(path, n_gpu_layers)
    cache = _load_cache()
    if cache.get(key):
        return
    cmd = [sys.executable, "-m", "edgellm.runtime.probe", str(path), str(n_gpu_layers)]
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # no gdb session on abort
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise BadModelFile(path, f"llama.cpp did not finish loading it within {_TIMEOUT_S} s") from None
    if done.returncode < 0:
        from edgellm.runtime.client import signal_name

        sig = signal_name(done.returncode)
        why = llama_log.last_error(done.stderr.splitlines()) or "no message"
        raise BadModelFile(path, f"llama.cpp crashed loading this file ({sig}: {why}); re-convert it")
    # a clean refusal (exit 1) is reported by the real load in-process, with llama.cpp's reason
    if done.returncode == 0:
        cache[key] = True
        target = _cache_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(target)


def _child(path: str, n_gpu_layers: int) -> int:
    """Load, create a tiny context, decode the BOS token: every step llama.cpp may abort in."""
    import llama_cpp

    llama_log.install(verbose=True)  # the parent shows the last line if we die
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = n_gpu_layers
    model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    if not model:
        return 1
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 32
    cp.n_threads = cp.n_threads_batch = 1
    ctx = llama_cpp.llama_init_from_model(model, cp)
    if not ctx:
        return 1
    vocab = llama_cpp.llama_model_get_vocab(model)
    bos = llama_cpp.llama_vocab_bos(vocab)
    tokens = (llama_cpp.llama_token * 1)(bos if bos >= 0 else 0)
    rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, 1))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], int(sys.argv[2])))
