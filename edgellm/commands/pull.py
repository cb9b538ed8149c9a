"""`edgellm pull NAME[:TYPE]`: fetch a registry model into the store, ready to run.

A ready-made GGUF is downloaded directly when the registry lists one for the type; otherwise the
original checkpoint is downloaded (only the files a conversion reads) and converted + quantized by
the `quantize` pipeline. Memory and disk are checked before the first byte is fetched."""

from __future__ import annotations

import argparse
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgellm.commands.leftovers import sweep_store
from edgellm.commands.options import add_ctx_option
from edgellm.errors import EdgeLLMError
from edgellm.models import gguf_file, hub, registry
from edgellm.models.registry import FILE_TYPES, ModelEntry
from edgellm.models.store import Ref, Store, StoredModel, name_like, parse_ref
from edgellm.runtime import planner
from edgellm.units import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="download a model by name (converting and quantizing it if needed)")
    p.add_argument("model", help="NAME[:TYPE] from `edgellm list --all`, e.g. qwen1.5-0.5b-chat:Q8_0, or "
                   "hf.co/ORG/REPO[:QUANT]: a GGUF file of any Hugging Face repository (default quant Q4_K_M)")
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


HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")
HUB_DEFAULT_QUANT = "Q4_K_M"  # what Ollama and llama.cpp's -hf pick when the tag names none


@dataclass(frozen=True)
class HubRef:
    """`hf.co/ORG/REPO[:QUANT]`: a repository of GGUF files and the quantization wanted."""

    repo: str
    quant: str | None

    @property
    def store_name(self) -> str:
        """`bartowski/Qwen2.5-0.5B-Instruct-GGUF` -> `qwen2.5-0.5b-instruct` (a store name)."""
        return name_like(re.sub(r"[-_.]gguf$", "", self.repo.rsplit("/", 1)[1], flags=re.IGNORECASE))


def parse_hub_ref(text: str) -> HubRef | None:
    """A `hf.co/ORG/REPO[:QUANT]` reference, None for a registry name; a malformed one is refused."""
    prefix = next((p for p in HUB_PREFIXES if text.lower().startswith(p)), None)
    if prefix is None:
        return None
    repo, _, quant = text[len(prefix) :].partition(":")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo) or ".." in repo:
        raise EdgeLLMError(f"'{text}' is not hf.co/ORG/REPO[:QUANT] "
                           "(e.g. hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M)")  # fmt: skip
    return HubRef(repo, quant.upper() or None)


def _quant_of(filename: str) -> str | None:
    """The quantization a GGUF file name carries (`...-Q4_K_M.gguf`, `....q8_0.gguf`), by the GGUF naming convention."""
    stem = re.sub(r"-\d{5}-OF-\d{5}$", "", filename.rsplit("/", 1)[-1][: -len(".gguf")].upper())  # split files
    return next((t for t in sorted(FILE_TYPES, key=len, reverse=True) if re.search(rf"(^|[.\-_]){t}$", stem)), None)


def pick_hub_file(ref: HubRef, files: dict[str, int]) -> tuple[str, str]:
    """The repository's GGUF file for ``ref.quant`` (default Q4_K_M, else the only one): (file, type)."""
    ggufs = {n: _quant_of(n) for n in files if n.lower().endswith(".gguf") and "mmproj" not in n.lower()}
    if not ggufs:
        raise EdgeLLMError(f"hf.co/{ref.repo} has no .gguf files: `edgellm pull` a registry name, or convert the "
                           "checkpoint with `edgellm quantize`")  # fmt: skip
    quants = sorted({q for q in ggufs.values() if q})
    want = ref.quant or (HUB_DEFAULT_QUANT if HUB_DEFAULT_QUANT in quants or len(ggufs) > 1 else None)
    matches = [n for n, q in ggufs.items() if want is None or q == want]
    if not matches:
        raise EdgeLLMError(f"hf.co/{ref.repo} has no {want} file; it has {', '.join(quants) or 'unnamed types'}: "
                           f"pull hf.co/{ref.repo}:{quants[0] if quants else 'TYPE'}")  # fmt: skip
    if any(re.search(r"-\d{5}-of-\d{5}\.gguf$", n) for n in matches):
        raise EdgeLLMError(f"hf.co/{ref.repo}: the {want} model is split into several files, which edgellm cannot "
                           "load yet; pick another quant")  # fmt: skip
    name = sorted(matches, key=len)[0]
    qtype = ggufs[name]
    if qtype is None:
        raise EdgeLLMError(f"hf.co/{ref.repo}/{name}: its name says no quantization type; download it and "
                           "`edgellm import` it")  # fmt: skip
    return name, qtype


def pull_hub(store: Store, href: HubRef, force: bool) -> int:
    """`pull hf.co/ORG/REPO[:QUANT]`: one GGUF file of any Hub repository into the store, named after it."""
    if hub.offline():
        raise EdgeLLMError("HF_HUB_OFFLINE is set: pulling hf.co/... needs the network (unset it)")
    files = hub.repo_files(href.repo)
    filename, qtype = pick_hub_file(href, files)
    ref = Ref(href.store_name, qtype)
    have = [m for m in store.named(ref.name) if m.qtype == qtype]
    if have and not force:
        print(f"{ref} is already pulled: {have[0].path}")
        return 0
    print(f"pulling {ref} from hf.co/{href.repo}/{filename} ({human_bytes(files.get(filename, 0))})")
    if files.get(filename):
        _check_disk(store.root, files[filename], f"{href.repo}/{filename}")
    part, commit = hub.download_resumable(href.repo, filename, store.staging())
    info = gguf_file.inspect(part)  # a truncated or non-GGUF download is refused here
    manifest = {"source": {"endpoint": hub.endpoint(), "repo": href.repo, "file": filename, "commit": commit},
                "architecture": info.architecture, "parameters": info.parameters}  # fmt: skip
    model = store.install(part, Ref(ref.name, info.file_type if info.file_type in FILE_TYPES else qtype), manifest,
                          move=True)  # fmt: skip
    print(f"pulled {model.ref} ({human_bytes(model.size)}): `edgellm run {model.name}`")
    return 0


def run(args: argparse.Namespace) -> int:
    sweep_store()
    href = parse_hub_ref(args.model)
    if href is not None:
        return pull_hub(Store(), href, args.force)
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
