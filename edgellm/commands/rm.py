"""`edgellm rm NAME[:TYPE]...`: delete models from the store (never a file outside it)."""

from __future__ import annotations

import argparse

from edgellm.commands.leftovers import sweep_store
from edgellm.errors import EdgeLLMError
from edgellm.models.store import Store, parse_ref
from edgellm.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rm", help="delete a model from the store (NAME: every type; NAME:TYPE: one file)")
    p.add_argument("models", nargs="+", metavar="NAME[:TYPE]")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sweep_store()
    store = Store()
    refs = [parse_ref(text) for text in args.models]  # every name is checked before anything is deleted
    for ref in refs:
        if ref.name == "default":
            raise EdgeLLMError("the bundled default model cannot be removed (it is part of the installation)")
        if not any(ref.qtype in (None, m.qtype) for m in store.named(ref.name)):
            raise EdgeLLMError(f"model '{ref}' not found in the store (see `edgellm list`)")
    for ref in refs:
        shared = {m.path for m in store.named(ref.name) if m.path.stat().st_nlink > 1}
        for model in store.remove(ref):
            print(f"deleted '{model.name}:{model.qtype}'")
            source = model.manifest.get("source")
            repo = source.get("repo") if isinstance(source, dict) else None
            if model.path in shared and repo:  # hard-linked from the Hub cache at pull: the bytes stay there
                print(f"  its download ({human_bytes(model.size)}) stays in the Hugging Face cache: "
                      f"`hf cache rm model/{repo}` frees it")  # fmt: skip
    return 0
