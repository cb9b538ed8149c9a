"""The model picker's two ways to a model that is not in the list yet: download a registry model
(`edgellm pull` in a child process, with progress) and open a local .gguf file (a file dialog)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label, ProgressBar

from edgellm.models.store import STAGING, Store
from edgellm.tui.model_choices import ModelChoice
from edgellm.units import human_bytes

POLL_SECONDS = 0.5


class DownloadScreen(ModalScreen[str | None]):
    """`edgellm pull REF` in a child process (the CLI's own checks, resumable `.part` download and
    conversion); the bar follows the bytes in the store's staging folder against the expected size.
    Esc stops it with SIGINT, as Ctrl-C would: the partial download stays for the next try.
    Dismisses with the ref once pulled, else None."""

    BINDINGS = [Binding("escape", "stop", "Stop")]

    def __init__(self, choice: ModelChoice) -> None:
        super().__init__(classes="dialog")
        self.choice = choice
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0
        self.staging = Store().root / STAGING

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            title = f"Downloading {self.choice.ref} (about {human_bytes(self.choice.size)})"
            yield Label(title, classes="dialog-title")
            yield ProgressBar(total=max(self.choice.size, 1), show_eta=False, id="bar")
            yield Label("starting…", id="rate")
            yield Label("Esc stops (the download resumes next time)", classes="hint")

    def on_mount(self) -> None:
        self.before = self._staged()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgellm", "pull", self.choice.ref],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # a Ctrl-C meant for the app does not reach it
        )  # fmt: skip
        self.set_interval(POLL_SECONDS, self._poll)

    def _staged(self) -> int:
        try:
            return sum(p.stat().st_size for p in self.staging.iterdir() if p.is_file())
        except OSError:
            return 0

    def _poll(self) -> None:
        assert self.proc is not None
        done = max(self._staged() - self.before, 0)
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.choice.size - done) / rate if rate > 0 and self.choice.size > done else 0.0
        # the size is the planner's estimate: a bigger file stretches the bar rather than overflow it
        self.query_one(ProgressBar).update(total=max(self.choice.size, done * 1.05, 1), progress=done)
        eta = f", about {left // 60:.0f}:{left % 60:02.0f} left" if left else ""
        self.query_one("#rate", Label).update(f"{human_bytes(done)} at {human_bytes(rate)}/s{eta}")
        if self.proc.poll() is None:
            return
        out, err = self.proc.communicate()
        if self.proc.returncode == 0:
            self.notify(out.strip().splitlines()[-1] if out.strip() else f"pulled {self.choice.ref}")
            self.dismiss(self.choice.ref)
        else:
            why = next((ln for ln in reversed(err.splitlines()) if ln.strip()), f"exit code {self.proc.returncode}")
            self.notify(why.removeprefix("edgellm: error: "), title="Not downloaded", severity="error", timeout=15)
            self.dismiss(None)

    def action_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait()
        self.dismiss(None)


class GGUFTree(DirectoryTree):
    """Folders and .gguf files only; hidden entries are left out."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() == ".gguf")]


class OpenFileScreen(ModalScreen[str | None]):
    """Pick a .gguf file in a tree (folders and .gguf files), or type its path; dismisses with the
    absolute path (chats remember files by absolute path)."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel")]

    def __init__(self, start: Path | None = None) -> None:
        super().__init__(classes="dialog")
        self.start = start or Path.cwd()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box open-box"):
            yield Label("Open a .gguf file", classes="dialog-title")
            yield Input(placeholder="or type a path and press Enter", id="path")
            yield GGUFTree(self.start, id="tree")
            yield Label("Enter on a file opens it · Esc cancels", classes="hint")

    def on_mount(self) -> None:
        self.query_one(GGUFTree).focus()

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self._open(event.path)

    @on(Input.Submitted, "#path")
    def _typed(self, event: Input.Submitted) -> None:
        self._open(Path(event.value.strip()).expanduser())

    def _open(self, path: Path) -> None:
        if path.suffix.lower() != ".gguf" or not path.is_file():
            self.notify(f"{path}: not a .gguf file", severity="warning")
            return
        self.dismiss(str(path.absolute()))  # not resolved: a symlink keeps the name it was given
