"""Generation speed on a busy laptop: thread counts and OpenMP wait policies under 0, 1 and 2
competing busy processes.

llama.cpp's CPU threads meet at a barrier after every graph node (hundreds per token). When a
busy process holds one of the cores, a thread that spins at that barrier waits a whole scheduler
time slice for its descheduled partner. Each variant below runs in its own worker process (the
OpenMP runtime reads its environment once, when llama.cpp loads), all loaded before measuring;
the burners (`while True: pass`, each ending itself after --burn-seconds) start per scenario,
and every repeat visits the variants in a rotated order, so the machine's own noise hits all.
Reported: the median tg tok/s and its ratio to the best variant of the same scenario, with the
load average seen before each scenario (this machine is shared). Writes the `threads` section
of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_threads [--model PATH] [--tokens 64] [--repeats 5] [--burners 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.report import machine, write_section
from edgellm.runtime import threads

BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


@dataclass(frozen=True)
class Variant:
    """One way to run generation: a thread count (None: edgellm's default) and OpenMP's environment."""

    key: str
    label: str
    n_threads: int | None
    env: dict[str, str] = field(default_factory=dict)
    policy: bool = False  # edgellm's own default set-up (its thread governor)
    watch: bool = False  # the governor running but never lowering the count: what it costs an idle machine


def variants(cores: int) -> list[Variant]:
    # "before": what edgellm did until now (all physical cores, fixed, and libgomp's default
    # spinning, which ggml leaves alone); the wait policy is spelled out so the user's does not leak in.
    unset = {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""}
    return [
        Variant("before", f"{cores} threads, spin (before)", cores, unset),
        Variant("spin1", "1 thread, spin", 1, unset),
        Variant("passive", f"{cores} threads, OMP_WAIT_POLICY=passive", cores, {**unset, "OMP_WAIT_POLICY": "passive"}),
        Variant("spincount", f"{cores} threads, GOMP_SPINCOUNT=10000", cores, {**unset, "GOMP_SPINCOUNT": "10000"}),
        Variant("passive1", "1 thread, OMP_WAIT_POLICY=passive", 1, {**unset, "OMP_WAIT_POLICY": "passive"}),
        Variant("watch", f"{cores} threads + the governor's watching (idle cost)", cores, unset, watch=True),
        Variant("after", "edgellm default (after)", None, policy=True),
    ]


def worker(model: str, n_threads: int | None, n_ctx: int, watch: bool) -> None:
    """Load the model once; answer each `N LIMIT` line on stdin with the tok/s of N single-token
    decodes (fewer if LIMIT seconds run out)."""
    import random

    from edgellm.runtime.engine import Engine, LoadOptions

    def tps(engine: Engine, n: int, limit: float) -> float:
        """llama-bench's tg: single-token decodes from an empty cache, logits for each; n of them,
        or as many as fit in ``limit`` seconds (a spinning set-up under load can take minutes)."""
        engine.reset()
        tokens = [rng.randrange(engine.info.vocab_size) for _ in range(n)]
        t0 = time.perf_counter()
        done = 0
        for token in tokens:
            engine.logits([token])
            done += 1
            if time.perf_counter() - t0 > limit:
                break
        return done / (time.perf_counter() - t0)

    rng = random.Random(0)
    with Engine(model, LoadOptions(n_ctx=n_ctx, n_threads=n_threads, probe=False)) as engine:
        tps(engine, 8, 10.0)  # warm-up
        if watch:  # told the machine has more cores than busy ones, it watches and never lowers the count
            governor = threads.Governor(engine._ctx, engine.n_threads, cores=engine.n_threads + 64)
        adaptive = getattr(engine, "_governor", None) is not None
        shown = f"auto, at most {engine.n_threads}" if adaptive else str(engine.n_threads)
        print(json.dumps({"ready": True, "threads": shown}), flush=True)
        for line in sys.stdin:
            n, limit = line.split()
            print(json.dumps({"tps": tps(engine, int(n), float(limit))}), flush=True)
        if watch:
            governor.stop()


def niceness(value: int | None):  # noqa: ANN201 - a preexec_fn or None
    """Run a child at this nice value: -20 gives the measured processes ~87x the share of CPU of
    other work at nice 0, which emulates an otherwise idle machine on a shared one."""
    return None if value is None else (lambda: os.setpriority(os.PRIO_PROCESS, 0, value))


def set_autogroup_nice(value: int) -> None:
    """Linux schedules each session's autogroup fairly against the others whatever its processes'
    nice values, so the measured session's group gets the nice value too (root only)."""
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write(str(value))
    except OSError as err:
        print(f"cannot set this session's autogroup nice value ({err.strerror}); --nice is per process only",
              file=sys.stderr)  # fmt: skip


class Worker:
    def __init__(self, variant: Variant, model: str, n_ctx: int, nice: int | None) -> None:
        env = dict(os.environ)
        if not variant.policy:
            env.update(variant.env)
            env = {k: v for k, v in env.items() if v != "" or k not in variant.env}
            env[threads.OFF_SWITCH] = "off"  # measure exactly this set-up, not edgellm's governor
        cmd = [sys.executable, "-m", "bench.bench_threads", "--worker", "--model", model, "--ctx", str(n_ctx)]
        if variant.n_threads is not None:
            cmd += ["--threads", str(variant.n_threads)]
        if variant.watch:
            cmd += ["--watch"]
        self.variant = variant
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=niceness(nice))  # fmt: skip
        self.threads = self._reply()["threads"]

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"worker for {self.variant.label!r} died (exit {self.proc.wait()})")
        return json.loads(line)

    def tps(self, n: int, limit: float) -> float:
        self.proc.stdin.write(f"{n} {limit}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._reply()["tps"]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)


def burners(n: int, seconds: float, nice: int | None) -> list[subprocess.Popen]:
    code = BURN.format(seconds=seconds)
    return [subprocess.Popen([sys.executable, "-c", code], preexec_fn=niceness(nice)) for _ in range(n)]


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: the bundled model)")
    ap.add_argument("--tokens", type=int, default=64, help="single-token decodes per measurement")
    ap.add_argument("--repeats", type=int, default=5, help="measurements per variant and scenario")
    ap.add_argument("--limit", type=float, default=5.0, help="a measurement stops after this many seconds")
    ap.add_argument("--burners", default="0,1,2", help="numbers of competing busy processes")
    ap.add_argument("--burn-seconds", type=float, default=600, help="each burner ends itself after this")
    ap.add_argument("--ctx", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nice", type=int, default=None,
                    help="run workers and burners at this nice value (-20: others' work on a shared machine "
                         "pushed aside, as if idle; needs root)")  # fmt: skip
    ap.add_argument("--variants", default=None,
                    help="comma-separated keys to measure: before, spin1, passive, spincount, passive1, watch, after "
                         "(default: all)")  # fmt: skip
    ap.add_argument("--section", default="threads", help="the docs/benchmarks.md section to write")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    if args.model is None:
        from edgellm.models.default_model import default_model_path

        args.model = str(default_model_path())
    if args.worker:
        worker(args.model, args.threads, args.ctx, args.watch)
        return
    cores = threads.physical_cores()
    counts = [int(x) for x in args.burners.split(",")]
    chosen = [v for v in variants(cores) if args.variants is None or v.key in args.variants.split(",")]
    if args.nice is not None:
        set_autogroup_nice(args.nice)
    workers = [Worker(v, args.model, args.ctx, args.nice) for v in chosen]
    results: dict[tuple[int, str], list[float]] = {}
    loads: dict[int, str] = {}
    try:
        for n_burn in counts:
            loads[n_burn] = loadavg()
            procs = burners(n_burn, args.burn_seconds, args.nice)
            try:
                time.sleep(2.0 if n_burn else 0.0)  # let the scheduler (and edgellm's governor) see them
                for rep in range(args.repeats):
                    order = workers[rep % len(workers) :] + workers[: rep % len(workers)]
                    for w in order:
                        results.setdefault((n_burn, w.variant.label), []).append(w.tps(args.tokens, args.limit))
                    print(f"{n_burn} burners, repeat {rep + 1}/{args.repeats}: load {loadavg()}", file=sys.stderr)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    finally:
        for w in workers:
            w.close()
        if args.nice is not None:
            set_autogroup_nice(0)

    header = ["set-up", "threads"] + [f"{n} busy: tok/s (x best)" for n in counts]
    rows = []
    for w in workers:
        cells = [w.variant.label, w.threads]
        for n in counts:
            med = statistics.median(results[(n, w.variant.label)])
            best = max(statistics.median(results[(n, x.variant.label)]) for x in workers)
            cells.append(f"{med:.1f} ({med / best:.2f})")
        rows.append(cells)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    label = f"others' work pushed aside (`--nice {args.nice}`)" if args.nice is not None else "as is"
    by_key = {w.variant.key: w.variant.label for w in workers}
    summary = ""
    if "before" in by_key and "after" in by_key:
        med = {(n, k): statistics.median(results[(n, by_key[k])]) for n in counts for k in ("before", "after")}
        ratios = ", ".join(f"{n} busy: {med[(n, 'after')] / med[(n, 'before')]:.2f}x" for n in counts)
        summary = f"edgellm default vs before: {ratios}.\n\n"
    text = (
        f"## Threads on a busy laptop (`bench/bench_threads.py`): {label}\n\n"
        f"Machine: {machine()}. Model: `{os.path.basename(args.model)}`. tg{args.tokens} (single-token "
        f"decodes, or fewer if {args.limit:g} s ran out), median of {args.repeats} per cell, variants "
        "interleaved (rotated order each repeat), "
        "each in its own process loaded before measuring; `N busy` = N extra `while True: pass` processes. "
        "Load average (1/5/15 min) seen before each scenario, from other engineers' work on this shared "
        f"machine: {'; '.join(f'{n} busy: {loads[n]}' for n in counts)}.\n\n"
        f"{table}\n\n{summary}"
        f"Command: `.venv/bin/python -m bench.bench_threads --tokens {args.tokens} --repeats {args.repeats} "
        f"--limit {args.limit:g} "
        f"--burners {args.burners}" + (f" --nice {args.nice} --section {args.section}" if args.nice is not None else "")
        + (f" --variants {args.variants}" if args.variants else "") + "`"
    )
    print(text)
    if not args.no_write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
