"""User-facing errors: one line naming the file and the fix, shown without a traceback."""

from __future__ import annotations

from pathlib import Path


class EdgeLLMError(Exception):
    """An error a user can act on; the CLI prints ``str(err)`` and exits non-zero."""

    exit_code = 1


class BadModelFile(EdgeLLMError):
    """A model file that cannot be used, with the reason."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class ContextOverflow(EdgeLLMError):
    """The prompt alone does not fit the context window."""


class Cancelled(EdgeLLMError):
    """Generation was stopped on request."""


class BadOption(EdgeLLMError, ValueError):
    """A command-line value that makes no sense; a ValueError too, so argparse types report it."""
