"""`edgellm import FILE.gguf [NAME]`: add a local GGUF file to the store (`ollama create` from a
file), so `run NAME`, `list`, `rm` and the chat app's picker know it by name.

The file is checked as a load would check it, then hard-linked into the store (no second copy on
the same disk; the original may be moved or deleted afterwards) or copied where links are
impossible. The type comes from the file's header; the name, unless given, from the file name by
the GGUF naming convention (`SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgellm.commands.leftovers import sweep_store
from edgellm.errors import EdgeLLMError
from edgellm.models import gguf_file, identity
from edgellm.models.registry import FILE_TYPES
from edgellm.models.store import Ref, Store, name_like, parse_ref
from edgellm.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="add a local .gguf file to the store under a name")
    p.add_argument("file", metavar="FILE.gguf", help="the GGUF file to add")
    p.add_argument("name", nargs="?", default=None, help="store name (default: from the file name, lowercased)")
    p.add_argument("--force", action="store_true", help="replace a stored model of the same name and type")
    p.set_defaults(handler=run)


def name_from_file(path: Path) -> str:
    """`Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` -> `qwen2.5-0.5b-instruct`: the type suffix (after `.` or
    `-`) dropped, lowercased, anything else than letters, digits, `.`, `_`, `-` made `-`."""
    return name_like(identity.file_title(path))


def run(args: argparse.Namespace) -> int:
    sweep_store()
    source = Path(args.file).expanduser()
    info = gguf_file.inspect(source)  # not a GGUF, truncated, an unknown architecture: one line here
    ref = parse_ref(args.name or name_from_file(source))
    if ref.qtype and ref.qtype != info.file_type:
        raise EdgeLLMError(f"{source} is a {info.file_type} file, not {ref.qtype}: give NAME without a type")
    if ref.name == "default":
        raise EdgeLLMError("`default` is the bundled model's name: choose another NAME")
    ref = Ref(ref.name, info.file_type)
    if info.file_type not in FILE_TYPES:
        raise EdgeLLMError(f"{source}: its type {info.file_type} has no store name; run it by its path instead")
    store = Store()
    if any(m.qtype == ref.qtype for m in store.named(ref.name)) and not args.force:
        raise EdgeLLMError(f"{ref} is already in the store: choose another NAME, `edgellm rm {ref}` it, or --force")
    manifest = {
        "source": {"file": str(source.resolve())},
        "architecture": info.architecture,
        "parameters": info.parameters,
    }
    model = store.install(source, ref, manifest, move=False)
    print(f"imported {ref} ({human_bytes(model.size)}): `edgellm run {ref.name}`")
    return 0
