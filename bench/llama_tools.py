"""llama.cpp's own tools (llama-server, llama-imatrix, llama-quantize, llama-batched-bench, llama-bench,
ggml-rpc-server, ...) and its converter, from the llama.cpp vendored in the pinned llama-cpp-python sdist:
the yardsticks that benches and parity tests hold edgellm against, at exactly the llama.cpp edgellm runs.

`sources()` fetches the sdist with pip (in hash-checking mode, and the hash checked again here before
unpacking) into edgellm's cache and unpacks it under a temporary name, renamed when complete.
`build(targets)` builds named CMake targets with the CPU flags `scripts/setup.sh --print-cmake-args`
gives the Python binding (never AMX, RPC on), one build folder per flag set; a tool already built is
returned at once, and a file lock keeps two processes (engineers, test sessions) from fetching or
building at the same time. Command line: `python -m bench.llama_tools llama-server llama-bench -j 2`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgellm import durable, paths

VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
# PyPI's published sha256 of the sdist (pip refuses any other file; checked again before unpacking).
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "setup.sh"

# Beyond the CPU flags: a static Release build of the tools, nothing fetched at build time (the
# server's prebuilt web UI comes from the Hub, so it is off), no OpenSSL (loopback only), no tests.
BUILD_ARGS = (
    "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
)  # fmt: skip
NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
TAIL_LINES = 40


class LlamaToolsError(RuntimeError):
    """Fetching or building failed; the message names the step and ends with its output's tail."""


def default_root() -> Path:
    """Where the sources and builds live: edgellm's cache (rebuildable, per user)."""
    return paths.cache_dir() / "llama.cpp" / f"llama-cpp-python-{VERSION}"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process fetching or building in {root}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"[llama-tools] {message}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _download(into: Path) -> Path:
    """The sdist, by pip (its index, proxy and certificate settings; its progress bar)."""
    req = into / "requirements.txt"
    req.write_text(f"llama-cpp-python=={VERSION} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "-d", str(into), "-r", str(req)]  # fmt: skip
    _say(f"fetching the llama-cpp-python {VERSION} sdist (77 MB) with pip")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-TAIL_LINES:])
        raise LlamaToolsError(f"pip could not fetch llama-cpp-python=={VERSION} (is PyPI reachable?):\n{tail}")
    got = into / SDIST
    if not got.is_file() or (digest := sha256(got)) != SDIST_SHA256:
        found = "missing" if not got.is_file() else f"sha256 {digest}"
        raise LlamaToolsError(f"{got}: {found}, expected sha256 {SDIST_SHA256}")
    return got


def sources(root: Path | None = None) -> Path:
    """The unpacked sdist (``…/vendor/llama.cpp`` holds llama.cpp), fetched on first use."""
    root = root or default_root()
    src = root / "src"
    if src.is_dir():
        return src
    with _locked(root):
        if src.is_dir():  # another process finished while this one waited
            return src
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
            sdist = _download(Path(tmp))
            _say(f"unpacking {sdist.name}")
            unpacked = Path(tmp) / "unpacked"
            with tarfile.open(sdist) as tar:
                tar.extractall(unpacked, filter="data")
            (top,) = unpacked.iterdir()
            os.replace(top, src)
            durable.flush(root)
    return src


def llama_cpp_dir(root: Path | None = None) -> Path:
    """llama.cpp's tree (CMakeLists.txt, convert_hf_to_gguf.py, gguf-py/, tools/)."""
    return sources(root) / "vendor" / "llama.cpp"


def cmake_args() -> list[str]:
    """The CPU/GPU/RPC flags the set-up builds the Python binding with, then the tools' own."""
    done = subprocess.run(["bash", str(SETUP), "--print-cmake-args"], capture_output=True, text=True, check=True)
    return [*done.stdout.split(), *BUILD_ARGS]


def build_dir(root: Path | None = None, args: Sequence[str] | None = None) -> Path:
    """One build folder per flag set, so a changed CPU or EDGELLM_GPU never reuses stale objects."""
    args = list(args if args is not None else cmake_args())
    key = hashlib.sha256(" ".join(args).encode()).hexdigest()[:12]
    return (root or default_root()) / f"build-{key}"


def _run_logged(cmd: list[str], what: str, progress: bool) -> None:
    """Run ``cmd``; show ninja's [done/total] steps as one progress line (rate, ETA) on stderr."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start, shown = time.perf_counter(), 0.0
    # cmake and ninja from the test extra's PyPI wheels (beside this interpreter) come first, the
    # system's otherwise: a fresh machine needs only what the README's set-up installs
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            step = NINJA_STEP.match(line)
            now = time.perf_counter()
            if progress and step and now - shown >= 10:
                shown = now
                done, total = int(step[1]), int(step[2])
                rate = done / (now - start)
                eta = (total - done) / rate if rate else 0
                _say(f"{what}: {done}/{total} steps, {rate * 60:.0f}/min, ETA {eta / 60:.1f} min")
    if proc.returncode != 0:
        raise LlamaToolsError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def build(targets: Sequence[str], *, root: Path | None = None, jobs: int | None = None,
          progress: bool = True) -> dict[str, Path]:  # fmt: skip
    """target -> its binary, building the missing ones (all in one ninja run)."""
    args = cmake_args()
    out = build_dir(root, args)
    binaries = {t: out / "bin" / t for t in targets}
    if all(b.is_file() for b in binaries.values()):
        return binaries
    tree = llama_cpp_dir(root)
    with _locked(root or default_root()):
        missing = [t for t, b in binaries.items() if not b.is_file()]
        if missing:
            if not (out / "build.ninja").is_file():
                _say(f"configuring llama.cpp in {out}: {' '.join(args)}")
                _run_logged(["cmake", "-S", str(tree), "-B", str(out), *args], "cmake configure", progress)
            jobs = jobs or os.cpu_count() or 1
            _say(f"building {', '.join(missing)} with {jobs} jobs (about 12 min on 2 cores from scratch)")
            t0 = time.perf_counter()
            _run_logged(["cmake", "--build", str(out), "-j", str(jobs), "--target", *missing], "build", progress)
            _say(f"built {', '.join(missing)} in {(time.perf_counter() - t0) / 60:.1f} min: {out / 'bin'}")
    if lost := [t for t, b in binaries.items() if not b.is_file()]:
        raise LlamaToolsError(f"the build finished without {', '.join(lost)} in {out / 'bin'} (not a target name?)")
    return binaries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("targets", nargs="*", help="CMake targets, e.g. llama-server llama-bench ggml-rpc-server")
    parser.add_argument("-j", "--jobs", type=int, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--root", type=Path, help=f"cache folder (default: {default_root()})")
    parser.add_argument("--clean", action="store_true", help="remove the build folder for these flags first")
    a = parser.parse_args(argv)
    try:
        if a.clean:
            shutil.rmtree(build_dir(a.root), ignore_errors=True)
        if not a.targets:
            print(llama_cpp_dir(a.root))
            return 0
        built = build(a.targets, root=a.root, jobs=a.jobs)
    except LlamaToolsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for binary in built.values():
        print(binary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
