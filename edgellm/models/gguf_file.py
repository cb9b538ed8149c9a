"""Read and check a GGUF file's header in Python before llama.cpp sees it.

llama.cpp aborts (no exception) on files that parse but carry impossible metadata or tensor
extents; everything it would trip over is refused here with a message naming the file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from edgellm.errors import BadModelFile
from edgellm.models.gguf_header import HeaderError, read_header

KNOWN_ARCHITECTURES = frozenset(gguf.MODEL_ARCH_NAMES.values())


def file_type_name(t: gguf.LlamaFileType) -> str:
    """llama.cpp's name for a file type, as its tools and GGUF file names write it: F32, F16, Q4_K_M."""
    return "F32" if t is gguf.LlamaFileType.ALL_F32 else t.name.removeprefix("MOSTLY_")


_FILE_TYPES = {t.value: file_type_name(t) for t in gguf.LlamaFileType}


@dataclass(frozen=True)
class GGUFInfo:
    """What `edgellm show` prints and what the planner needs, read from the header alone."""

    path: Path
    file_size: int
    architecture: str
    name: str  # the readable name (edgellm.models.identity); the header's own is metadata["general.name"]
    file_type: str
    parameters: int
    context_length: int
    block_count: int
    head_count: int
    head_count_kv: int
    embedding_length: int
    vocab_size: int
    chat_template: str | None
    tensor_types: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        return self.file_size * 8 / max(self.parameters, 1)

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "name": self.name,
            "file_type": self.file_type,
            "parameters": self.parameters,
            "file_size": self.file_size,
            "bits_per_weight": round(self.bits_per_weight, 3),
            "context_length": self.context_length,
            "block_count": self.block_count,
            "head_count": self.head_count,
            "head_count_kv": self.head_count_kv,
            "embedding_length": self.embedding_length,
            "vocab_size": self.vocab_size,
            "tensor_types": self.tensor_types,
            "chat_template": self.chat_template,
        }


def inspect(path: str | os.PathLike[str]) -> GGUFInfo:
    """Validate ``path`` as a GGUF file llama.cpp can load and summarise it, or raise BadModelFile."""
    p = Path(path)
    if not p.exists():
        raise BadModelFile(p, "no such file (give a .gguf path, or a model name from `edgellm list`)")
    if p.is_dir():
        if (p / "config.json").is_file() or (p / "params.json").is_file():
            raise BadModelFile(p, f"a model checkpoint folder, not a .gguf file: convert it first with "
                                  f"`edgellm quantize {p}`, then run the .gguf it writes")  # fmt: skip
        raise BadModelFile(p, "is a directory, not a .gguf file (give the .gguf file inside it)")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        hint = " (a safetensors/PyTorch checkpoint? convert it with `edgellm quantize`)" if size else ""
        raise BadModelFile(p, f"not a GGUF file (no GGUF magic){hint}")
    try:
        header = read_header(p)
    except HeaderError as err:
        raise BadModelFile(p, f"corrupt or truncated GGUF header: {err}; re-download or re-convert it") from None
    for t in header.tensors:
        end = t.offset + t.n_bytes
        if end > size:
            why = f"tensor {t.name} lies outside the file (ends at byte {end}, file has {size})"
            raise BadModelFile(p, f"truncated or corrupt: {why}; re-download or re-convert it")
    fields = header.fields
    if not header.tensors:
        raise BadModelFile(p, "GGUF has no tensors (a vocabulary-only file?)")
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise BadModelFile(p, "GGUF has no general.architecture; it is not a model file")
    if arch not in KNOWN_ARCHITECTURES:
        raise BadModelFile(p, f"architecture '{arch}' is not supported by this llama.cpp build")

    def num(key: str, default: int = 0) -> int:
        value = fields.get(f"{arch}.{key}", default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    blocks, embd = num("block_count"), num("embedding_length")
    heads = num("attention.head_count")
    heads_kv = num("attention.head_count_kv", heads)
    ctx = num("context_length")
    for key, value in (("block_count", blocks), ("embedding_length", embd), ("context_length", ctx)):
        if value <= 0:
            raise BadModelFile(p, f"impossible metadata {arch}.{key}={value}; re-convert the model")
    if heads <= 0 or heads_kv <= 0 or heads % heads_kv:
        raise BadModelFile(p, f"impossible attention heads ({heads} query / {heads_kv} kv); re-convert the model")
    if f"{arch}.attention.key_length" not in fields and embd % heads:
        raise BadModelFile(p, f"embedding_length {embd} is not a multiple of head_count {heads}")

    types: dict[str, int] = {}
    for t in header.tensors:
        types[t.type.name] = types.get(t.type.name, 0) + 1
    file_type = fields.get("general.file_type")
    template = fields.get("tokenizer.chat_template")
    from edgellm.models import identity  # here, not at the top: identity -> registry -> this module
    return GGUFInfo(
        path=p,
        file_size=size,
        architecture=arch,
        name=identity.display_name(p, fields.get("general.name")),
        file_type=_FILE_TYPES.get(int(file_type), str(file_type)) if file_type is not None else _guess_type(types),
        parameters=sum(t.n_elements for t in header.tensors),
        context_length=ctx,
        block_count=blocks,
        head_count=heads,
        head_count_kv=heads_kv,
        embedding_length=embd,
        vocab_size=int(fields.get("tokenizer.ggml.tokens", 0) or 0),
        chat_template=template if isinstance(template, str) else None,
        tensor_types=types,
        metadata={k: v for k, v in fields.items() if not k.startswith("GGUF.")},
    )


def _guess_type(types: dict[str, int]) -> str:
    """Most common non-f32 tensor type, for files without general.file_type."""
    quant = {k: v for k, v in types.items() if k != "F32"} or types
    return max(quant, key=lambda k: quant[k])
