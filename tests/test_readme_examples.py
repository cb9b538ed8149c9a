"""Every `edgellm ...` command in README.md's shell examples is one the CLI accepts: the verb exists
and every option parses (argparse exits on an unknown or malformed one). The examples that can run
here (the default model's questions, serve, worker, quantize, pull from the fake Hub) are run for
real by their own tests; this one catches an example left behind by a renamed or removed option."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edgellm.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


def examples() -> list[str]:
    found = []
    for block in _BLOCK.findall(README.read_text(encoding="utf-8")):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip().removeprefix("$ ")
            for part in command.split("|"):  # `echo ... | edgellm run default`
                part = part.strip()
                if part.startswith(("edgellm ", ".venv/bin/edgellm ")):
                    found.append(part)
    return found


def test_the_readme_has_examples() -> None:
    assert len(examples()) >= 25


@pytest.mark.parametrize("command", examples())
def test_readme_example_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"README example rejected by the CLI (exit {exit_.code}): {command}")
    assert args.handler is not None
