"""Temporary files an interrupted edgellm left behind (kill -9, a power cut), removed when the next
command starts that writes to the same folder.

Every temporary name edgellm writes carries the writer's process id: quantize's
`.NAME.PID.intermediate` and `.NAME.PID.partial`, `edgellm.durable`'s `.NAME.PID.tmp`, the store's
`NAME-TYPE.PID.tmp` and a pull's `NAME-TYPE.PID.gguf` in its staging folder, a runner's `PID.json`
status file. Beside a user's own files only hidden names are considered. A file is removed only
when no process with that id runs (a live writer, or a process that reused the id, keeps it). A
resumable download (`ETAG.part`) is kept for `edgellm pull` to resume unless nobody touched it for
STALE_DOWNLOAD_DAYS."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from edgellm.units import human_bytes

# beside user files (quantize's output folder, the data folder): only hidden .NAME.PID.KIND names
HIDDEN_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.(?:intermediate|partial|tmp)$")
# the store's staging folder holds nothing else: NAME-TYPE.PID.tmp, a conversion's NAME-TYPE.PID.gguf
STAGING_TEMP = re.compile(r"^.+\.(?P<pid>\d+)\.(?:tmp|gguf)$")
RUNNER_STATUS = re.compile(r"^(?P<pid>\d+)\.json$")
STALE_DOWNLOAD_DAYS = 7


@dataclass
class Swept:
    files: int = 0
    bytes: int = 0

    def add(self, other: Swept) -> Swept:
        return Swept(self.files + other.files, self.bytes + other.bytes)


def _orphan(path: Path, pattern: re.Pattern[str]) -> bool:
    match = pattern.match(path.name)
    return bool(match) and path.is_file() and not psutil.pid_exists(int(match["pid"]))


def _stale_download(path: Path, now: float) -> bool:
    if path.suffix != ".part" or not path.is_file():
        return False
    if Path(f"{path}.lock").exists():  # a pull is (or was just) writing it; FileLock owns that name
        return False
    return now - path.stat().st_mtime > STALE_DOWNLOAD_DAYS * 86_400


def sweep(folder: Path, pattern: re.Pattern[str] = HIDDEN_TEMP, *, downloads: bool = False) -> Swept:
    """Remove ``folder``'s temporary files whose writer is gone (not recursive); what was freed."""
    swept = Swept()
    try:
        entries = list(folder.iterdir())
    except OSError:  # no folder yet, or unreadable: nothing of ours to clean
        return swept
    now = time.time()
    for path in entries:
        if _orphan(path, pattern) or (downloads and _stale_download(path, now)):
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            swept = swept.add(Swept(1, size))
    return swept


def say(swept: Swept) -> Swept:
    """How much space the sweep freed, on stderr (silent when nothing was there)."""
    if swept.files:
        print(
            f"edgellm: removed {swept.files} temporary file{'s' if swept.files > 1 else ''} left by interrupted "
            f"runs, freeing {human_bytes(swept.bytes)}",
            file=sys.stderr,
        )
    return swept


def sweep_output(folder: Path) -> Swept:
    """At the start of `quantize`: its intermediates and partial outputs in the output folder."""
    return say(sweep(folder))


def sweep_store() -> Swept:
    """At the start of the verbs that use the store and the data folder (pull, import, rm, list, run, chat)."""
    from edgellm import paths
    from edgellm.models.store import STAGING, Store

    swept = sweep(Store().root / STAGING, STAGING_TEMP, downloads=True)
    for folder in (paths.data_dir(), paths.cache_dir()):
        swept = swept.add(sweep(folder))
    swept = swept.add(sweep(paths.runtime_dir() / "runners", RUNNER_STATUS))
    return say(swept)
