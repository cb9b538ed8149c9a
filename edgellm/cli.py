"""`edgellm VERB ...`: each verb lives in its own module under edgellm.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from edgellm import __version__
from edgellm.errors import EdgeLLMError

# verb modules, in the order `edgellm --help` lists them; each has register(subparsers) and run(args)
VERBS = ["run", "chat", "show", "pull", "list", "rm", "plan", "quantize", "bench", "eval", "doctor", "worker", "serve",
         "imatrix", "import_gguf", "ps"]


def build_parser() -> argparse.ArgumentParser:
    from edgellm.commands.options import Parser  # one-line usage errors, defaults in every help

    parser = Parser(prog="edgellm", description="Run open LLMs on a laptop CPU: convert, quantize, chat.")
    parser.add_argument("--version", action="version", version=f"edgellm {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"edgellm.commands.{verb}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:  # `edgellm` alone: what it can do, as `ollama` alone says
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except EdgeLLMError as err:
        print(f"edgellm: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
