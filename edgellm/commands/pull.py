"""`edgellm pull NAME[:TYPE]`: fetch a registry model into the store, ready to run.

A ready-made GGUF is downloaded directly when the registry lists one for the type; otherwise the
original checkpoint is downloaded (only the files a conversion reads) and converted + quantized by
the `quantize` pipeline. Memory and disk are checked before the first byte is fetched."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from edgellm.commands.leftovers import sweep_store
from edgellm.commands.options import add_ctx_option
from edgellm.errors import EdgeLLMError
from edgellm.models import gguf_file, hub, registry
from edgellm.models.registry import ModelEntry
from edgellm.models.store import Ref, Store, StoredModel, parse_ref
from edgellm.runtime import planner
from edgellm.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="download a model by name (converting and quantizing it if needed)")
    p.add_argument("model", help="NAME[:TYPE] from `edgellm list --all`, e.g. qwen1.5-0.5b-chat:Q8_0")
    add_ctx_option(p, "context you mean to use (memory check)")
    p.add_argument("--force", action="store_true", help="fetch again even if the store has it")
    p.add_argument("--no-memory-check", action="store_true", help="pull even if it will not fit this machine")
    p.set_defaults(handler=run)


def _manifest(entry: ModelEntry, path: Path, source: dict[str, object]) -> dict[str, object]:
    info = gguf_file.inspect(path)  # a truncated or non-GGUF download is refused here
    manifest: dict[str, object] = {
        "registry": entry.name,
        "source": {"endpoint": hub.endpoint(), **source},
        "architecture": info.architecture,
        "parameters": info.parameters,
    }
    if info.chat_template is None and entry.chat_template():
        manifest["chat_template"] = entry.chat_template()
    return manifest


def _check_disk(folder: Path, need: int, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise EdgeLLMError(f"{what} needs {human_bytes(need)} of disk in {folder} but {human_bytes(free)} is free")


def pull_gguf(store: Store, entry: ModelEntry, ref: Ref) -> StoredModel:
    """The registry's ready-made GGUF: hard-linked from the Hub cache if it is there (offline too),
    else downloaded (resumably) straight into the store."""
    assert entry.gguf_repo
    filename = entry.gguf_files[ref.qtype or entry.recommended]
    print(f"pulling {ref} from {entry.gguf_repo}/{filename}")
    cached = hub.cached_file(entry.gguf_repo, filename)
    if cached is None and hub.offline():
        cached = hub.download_file(entry.gguf_repo, filename)  # raises the one-line offline error
    if cached is not None:
        source = {"repo": entry.gguf_repo, "file": filename, "commit": hub.commit_of(cached)}
        return store.install(cached, ref, _manifest(entry, cached, source), move=False)
    size = hub.repo_files(entry.gguf_repo).get(filename)  # a missing file is the download's 404
    if size:
        _check_disk(store.root, size, f"{entry.gguf_repo}/{filename}")
    part, commit = hub.download_resumable(entry.gguf_repo, filename, store.staging())
    source = {"repo": entry.gguf_repo, "file": filename, "commit": commit}
    return store.install(part, ref, _manifest(entry, part, source), move=True)


def convert_checkpoint(folder: Path, out: Path, qtype: str) -> None:
    """Hand the checkpoint to the conversion pipeline (imported only when a conversion is needed)."""
    try:
        from quantize import run as convert_and_quantize
    except ImportError:
        raise EdgeLLMError(
            f"{out.name}: no ready-made GGUF, and the conversion pipeline (quantize) is not installed"
        ) from None
    convert_and_quantize(folder, qtype.lower(), out=out, force=True)


def pull_checkpoint(store: Store, entry: ModelEntry, ref: Ref) -> StoredModel:
    """The original checkpoint (only what a conversion reads), converted and quantized."""
    qtype = ref.qtype or entry.recommended
    files = None if hub.offline() else hub.repo_files(entry.repo)
    patterns = hub.checkpoint_patterns(files)
    if files is not None:
        download = sum(hub.selected(files, patterns).values())
        _check_disk(hub.cache_dir(), download, entry.repo)
        _check_disk(store.root, planner.Weights.from_params(entry.shape, qtype).total, f"{ref}")
    print(f"pulling {entry.repo} to convert it to {qtype}")
    folder = hub.download_snapshot(entry.repo, patterns)
    out = store.staging() / f"{ref.name}-{qtype}.{os.getpid()}.gguf"
    try:
        convert_checkpoint(folder, out, qtype)
        source = {"repo": entry.repo, "commit": hub.commit_of(folder), "converted_to": qtype}
        model = store.install(out, Ref(ref.name, qtype), _manifest(entry, out, source), move=True)
    finally:
        out.unlink(missing_ok=True)
    kept = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    print(f"the original checkpoint ({human_bytes(kept)}) stays in the Hugging Face cache for the next conversion: "
          f"`hf cache rm model/{entry.repo}` frees it")  # fmt: skip
    return model


def run(args: argparse.Namespace) -> int:
    sweep_store()
    asked = parse_ref(args.model)
    entry = registry.load().lookup(asked.name)
    ref = Ref(entry.name, asked.qtype or entry.recommended)
    store = Store()
    have = [m for m in store.named(ref.name) if m.qtype == ref.qtype]
    if have and not args.force:
        print(f"{ref} is already pulled: {have[0].path}")
        return 0
    if ref.qtype not in planner.BITS_PER_WEIGHT:
        raise EdgeLLMError(f"{ref}: edgellm cannot make {ref.qtype} files (try one of {', '.join(planner.PLAN_TYPES)})")
    if not args.no_memory_check:
        planner.refuse_unless_fits_entry(entry, ref.qtype, args.ctx)
    model = pull_gguf(store, entry, ref) if entry.gguf_file(ref.qtype) else pull_checkpoint(store, entry, ref)
    print(f"pulled {ref} ({human_bytes(model.size)}): {model.path}")
    return 0
