"""`edgellm rm NAME[:TYPE]...`: delete models from the store (never a file outside it)."""

from __future__ import annotations

import argparse

from edgellm.errors import EdgeLLMError
from edgellm.store import Store, parse_ref


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rm", help="delete a model from the store (NAME: every type; NAME:TYPE: one file)")
    p.add_argument("models", nargs="+", metavar="NAME[:TYPE]")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store = Store()
    refs = [parse_ref(text) for text in args.models]  # every name is checked before anything is deleted
    for ref in refs:
        if ref.name == "default":
            raise EdgeLLMError("the bundled default model cannot be removed (it is part of the installation)")
        if not any(ref.qtype in (None, m.qtype) for m in store.named(ref.name)):
            raise EdgeLLMError(f"model '{ref}' not found in the store (see `edgellm list`)")
    for ref in refs:
        for model in store.remove(ref):
            print(f"deleted '{model.name}:{model.qtype}'")
    return 0
