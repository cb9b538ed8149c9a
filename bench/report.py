"""Write one benchmark's results into its own section of docs/benchmarks.md.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, so
benchmarks can be rerun independently without clobbering each other."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
NOTES = Path(__file__).resolve().parent / "notes"
HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`; rerun a script to refresh its section.\n"


def machine() -> str:
    """One line describing where the numbers were measured."""
    try:
        import psutil

        cores = f"{psutil.cpu_count(logical=False)} physical / {psutil.cpu_count()} logical cores"
        ram = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        cores, ram = "", ""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    rev = rev or "?"
    return f"{time.strftime('%Y-%m-%d')}, {cpu}, {cores}, {ram}, commit {rev}"


def load_average() -> str:
    """How busy the machine was, for a results header (the benchmark's own threads included)."""
    return f"load average {os.getloadavg()[0]:.1f} at the end (this benchmark's own threads included)"


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md with `markdown`, followed by
    bench/notes/NAME.md where that exists (the hand-written reading of numbers measured elsewhere)."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    notes = NOTES / f"{name}.md"
    if notes.exists():
        markdown = markdown.rstrip() + "\n\n" + notes.read_text()
    block = f"<!-- bench:{name} -->\n{markdown.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def run(main: Callable[[], None]) -> None:
    """A benchmark's entry point: Ctrl-C ends it with one line and exit 130, not a traceback.
    Nothing is half-written: a section is written only at the end, by write_section's rename."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: no results written", file=sys.stderr)
        raise SystemExit(130) from None
