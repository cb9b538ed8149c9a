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
    parser.set_defaults(verb_parsers=sub.choices)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line, with options allowed between a verb's positionals, as Ollama takes them
    (`edgellm run default --temperature 0 "Why?"`): argparse fills every positional at their
    first run, so there the prompt was "unrecognized"; a verb's arguments left over that way are
    parsed again, intermixed."""
    args, extra = parser.parse_known_args(argv)
    if not extra or args.verb is None:
        return parser.parse_args(argv)  # the usual one-line error for anything truly unknown
    rest = argv[argv.index(args.verb) + 1 :]
    return argparse.Namespace(**{**vars(args), **vars(args.verb_parsers[args.verb].parse_intermixed_args(rest))})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else argv)
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
