"""How many CPU threads llama.cpp uses on a laptop that is also doing other work.

This llama.cpp build runs ggml's threads through OpenMP (libgomp). They meet at a barrier after
every graph node, hundreds of times per token, and libgomp spins there. While another process
holds one of the cores, a spinning thread burns the time slice its descheduled partner needs:
with one busy process on this 2-core machine, 2 threads made 26 tok/s where 1 thread made 65, and
with two busy processes 0.9 against 44 (`bench/bench_threads.py`, docs/benchmarks.md). Waiting
passively instead (`OMP_WAIT_POLICY=passive`) does not fix it (27 tok/s with one busy process)
and costs an idle machine more than half its speed (42 against 102), so edgellm keeps libgomp's
spinning and changes the thread count instead: a `Governor` watches how much CPU other processes
take and keeps a context's threads at the cores they leave free (all physical cores on an idle
machine, as before). ggml's own thread pool `poll` level (llama-server's `--poll`,
`ggml_threadpool_params.poll`) applies only to builds without OpenMP, whose barriers spin
regardless of it. `EDGELLM_THREAD_POLICY=off` keeps the thread count fixed (benchmarks compare
against it); an explicit `--threads N` is always kept."""

from __future__ import annotations

import ctypes
import os
import threading

import llama_cpp
import psutil

OFF_SWITCH = "EDGELLM_THREAD_POLICY"
INTERVAL = 0.5  # seconds between looks at the CPU accounting
# a busy share of a core above this counts as a core taken (a burner measured ~0.67 of a core
# beside 2 spinning threads, ~1.0 beside 1 thread)
TAKEN = 0.5


def physical_cores() -> int:
    """Physical cores: hyper-threads only fight over the same memory bandwidth."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_threads() -> int:
    """The most threads a context gets: one per physical core (the Governor lowers it while
    other work holds cores)."""
    return physical_cores()


def free_cores(cores: int, others_busy: float, most: int) -> int:
    """Threads for ``cores`` cores of which other processes keep ``others_busy`` busy: the cores
    they leave, at least 1 and at most ``most``."""
    taken = int(others_busy + (1 - TAKEN))  # rounds at TAKEN
    return max(1, min(most, cores - taken))


def adaptive() -> bool:
    return os.environ.get(OFF_SWITCH, "").lower() != "off"


class CpuWatch:
    """How many cores' worth of CPU other processes used since the last look: the machine's busy
    time (steal included: a hypervisor's other guests take cores too) less this process's."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        mine = self._me.cpu_times()
        return busy, mine.user + mine.system, sum(t)

    def others_busy(self) -> float:
        now = self._sample()
        busy, mine, total = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        cores = psutil.cpu_count() or 1
        elapsed = total / cores  # wall seconds, measured by the same clock as the busy time
        return max(0.0, busy - mine) / elapsed if elapsed > 0 else 0.0


class Governor:
    """Keeps a llama.cpp context's thread count at the cores other processes leave free, looking
    every INTERVAL seconds and changing it after two looks agree. llama.cpp reads the count at
    each decode, so a change takes effect at the next token. `stop` before freeing the context."""

    def __init__(self, ctx: ctypes.c_void_p, most: int, cores: int | None = None) -> None:
        self.ctx, self.most, self.cores = ctx, most, cores or physical_cores()
        self.n_threads = most
        self._stop = threading.Event()
        self._watch = CpuWatch()
        self._thread = threading.Thread(target=self._run, name="edgellm-threads", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = self.n_threads
        while not self._stop.wait(INTERVAL):
            choice = free_cores(self.cores, self._watch.others_busy(), self.most)
            if choice != self.n_threads and choice == pending:
                llama_cpp.llama_set_n_threads(self.ctx, choice, choice)
                self.n_threads = choice
            pending = choice

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
