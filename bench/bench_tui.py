"""Generation speed in the chat TUI against headless `edgellm run`: the UI must not slow the model.

Both are the real CLI in a fresh process on the same model, prompt, context, threads and number
of greedy tokens; repeats alternate between the two so machine noise hits both. `edgellm run
--verbose` prints the turn's statistics; `edgellm chat` runs in a pseudo-terminal (so Textual
really renders, 10 times a second), the prompt is typed into it, and the answer's statistics are
read from its chat database once the answer is saved as done. Writes the `tui` section of
docs/benchmarks.md.

    .venv/bin/python -m bench.bench_tui [--model default] [--repeats 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil

from bench.report import machine, write_section
from edgellm.runtime.engine import default_threads

PROMPT = "Write a very long essay about the history of Rome."
EDGELLM = [sys.executable, "-m", "edgellm"]
STATS = re.compile(r"generated: (\d+) tokens, ([\d.]+) tok/s")
TERMINAL = (120, 40)  # columns, rows


def common_args(args: argparse.Namespace) -> list[str]:
    return [
        "--temperature", "0", "--max-tokens", str(args.tokens), "--ctx", str(args.ctx),
        "--threads", str(args.threads),
    ]  # fmt: skip


def headless(args: argparse.Namespace) -> tuple[int, float]:
    """(generated tokens, tok/s) of `edgellm run MODEL PROMPT --verbose`."""
    cmd = [*EDGELLM, "run", args.model, PROMPT, *common_args(args), "--verbose"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = STATS.findall(done.stderr)
    if not found:
        raise SystemExit(f"no statistics in `edgellm run` output:\n{done.stderr[-2000:]}")
    tokens, tps = found[-1]
    return int(tokens), float(tps)


def _answer_stats(db: Path) -> dict | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as con:
            row = con.execute("SELECT state, stats FROM messages WHERE role = 'assistant' ORDER BY id DESC").fetchone()
    except sqlite3.OperationalError:  # the app has not created its tables yet
        return None
    if row is None or row[0] != "done":
        return None
    import json

    return json.loads(row[1])


def event_loop_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread: Textual's event loop (rendering, saving), as
    opposed to the worker thread and llama.cpp's threads that generate."""
    main = next(t for t in psutil.Process(pid).threads() if t.id == pid)
    return main.user_time + main.system_time


def in_tui(args: argparse.Namespace, home: Path) -> tuple[int, float, float]:
    """(generated tokens, tok/s, share of one core the event loop used while answering) of one
    answer in `edgellm chat`, driven through a pseudo-terminal, in a fresh data folder ``home``."""
    home.mkdir()
    db = home / "chats.db"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL[1], TERMINAL[0], 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "EDGELLM_HOME": str(home), "COLORTERM": "truecolor"}
    cmd = [*EDGELLM, "chat", args.model, *common_args(args), "--db", str(db)]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    screen = bytearray()

    def drain() -> None:  # a terminal reads what the app writes; a full pty would block the app
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data[-4096:])

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while b"Message (Enter sends)" not in screen and b"Enter send" not in screen:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"`edgellm chat` did not start:\n{screen[-2000:].decode(errors='replace')}")
            time.sleep(0.1)
        time.sleep(1.0)  # the model loads in the background right after the screen appears
        cpu0, wall0 = event_loop_cpu(proc.pid), time.monotonic()
        os.write(master, PROMPT.encode() + b"\r")
        while (stats := _answer_stats(db)) is None:
            if proc.poll() is not None or time.monotonic() > deadline + 300:
                raise SystemExit("`edgellm chat` ended or stalled before the answer was done")
            time.sleep(0.2)
        loop_share = (event_loop_cpu(proc.pid) - cpu0) / (time.monotonic() - wall0)
        os.write(master, b"\x11")  # Ctrl+Q
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return int(stats["generated_tokens"]), float(stats["generation_tps"]), loop_share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args()
    run_tps: list[float] = []
    tui_tps: list[float] = []
    loop_shares: list[float] = []
    load_before = os.getloadavg()[0]
    counts: set[tuple[str, int]] = set()
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        for i in range(args.repeats):
            n, tps = headless(args)
            run_tps.append(tps)
            counts.add(("run", n))
            n, tps, share = in_tui(args, Path(tmp) / f"repeat-{i}")
            tui_tps.append(tps)
            loop_shares.append(share)
            counts.add(("chat", n))
            print(f"repeat {i + 1}: run {run_tps[-1]:.1f} tok/s, chat {tui_tps[-1]:.1f} tok/s", flush=True)
    run_median, tui_median = statistics.median(run_tps), statistics.median(tui_tps)
    ratio = tui_median / run_median
    # each pair ran back to back: its ratio is the least disturbed by load that comes and goes
    pair_ratio = statistics.median(t / r for t, r in zip(tui_tps, run_tps, strict=True))
    tokens = ", ".join(f"{who} {n}" for who, n in sorted(counts))
    verdict = "meets" if min(ratio, pair_ratio) >= 0.95 else "MISSES"
    cores = psutil.cpu_count() or 1
    load = max(load_before, os.getloadavg()[0])
    busy = (
        f"\nOther programs shared the CPU (load average {load:.1f} on {cores} cores at the start or the end): "
        "a repeat far below the others was slowed by them, which is why the pairs' ratio is reported too.\n"
        if load > cores
        else ""
    )
    markdown = f"""## TUI generation speed (`edgellm chat` vs headless `edgellm run`)

`.venv/bin/python -m bench.bench_tui --model {args.model} --repeats {args.repeats} --tokens {args.tokens}` —
{machine()}.
Same prompt, greedy, context {args.ctx}, {args.threads} threads; each repeat is a fresh process of each;
the TUI runs in a {TERMINAL[0]}x{TERMINAL[1]} pseudo-terminal and re-renders the streaming Markdown at most
10 times a second. Tokens generated per answer: {tokens}.

| | median tok/s | all repeats |
| --- | ---: | --- |
| `edgellm run` (headless) | {run_median:.1f} | {", ".join(f"{x:.1f}" for x in run_tps)} |
| `edgellm chat` (TUI) | {tui_median:.1f} | {", ".join(f"{x:.1f}" for x in tui_tps)} |

TUI / headless: **{ratio:.3f}x** (ratio of the medians); median of the back-to-back pairs' ratios
**{pair_ratio:.3f}x** ({verdict} the 0.95x goal). While answering, the TUI's event loop
(Markdown rendering, status bar, saving to SQLite) used a median {statistics.median(loop_shares):.1%} of one core
({", ".join(f"{x:.1%}" for x in loop_shares)}).
{busy}"""
    print(markdown)
    write_section("tui", markdown)


if __name__ == "__main__":
    main()
