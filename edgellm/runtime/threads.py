"""How llama.cpp's CPU threads share a laptop with other work: how many, and how they wait.

This llama.cpp build runs ggml's threads through OpenMP (libgomp). They meet at a barrier after
every graph node, hundreds of times per token, and libgomp's default is to spin there. While
another process holds one of the cores, the spinning thread burns the time slice its
descheduled partner needs: on this 2-core machine, shared and busy, two spinning threads made
0.2 tok/s where one thread made 25 (`bench/bench_threads.py`, docs/benchmarks.md). Waiting
passively (`OMP_WAIT_POLICY=passive`: sleep on a futex at once) keeps two threads as fast as one
under contention and as fast as spinning on an idle machine, so edgellm asks libgomp for it and
keeps one thread per physical core.

libgomp reads its environment once, when llama.cpp's library loads, so `configure_openmp` runs
when this package is imported, before any of its modules imports `llama_cpp`; the runner
process inherits it. A wait policy or spin count the user set is left alone, and
`EDGELLM_THREAD_POLICY=off` leaves libgomp's defaults (benchmarks compare against them).
ggml's own thread pool `poll` level (llama-server's `--poll`, `ggml_threadpool_params.poll`)
applies only to builds without OpenMP, and its barriers spin regardless of it."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import psutil

OFF_SWITCH = "EDGELLM_THREAD_POLICY"
# libgomp's variables edgellm sets; any of them set by the user means: the user decides
WAIT_POLICY = {"OMP_WAIT_POLICY": "passive"}
_USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def configure_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """Ask libgomp for passive waiting, unless the user chose a wait policy or turned this off."""
    if environ.get(OFF_SWITCH, "").lower() == "off" or any(k in environ for k in _USER_KNOBS):
        return
    environ.update(WAIT_POLICY)


def physical_cores() -> int:
    """Physical cores: hyper-threads only fight over the same memory bandwidth."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_threads() -> int:
    """One thread per physical core (with passive waiting, that is also right while other work
    holds a core; see the module docstring)."""
    return physical_cores()
