"""Read and check a GGUF file's header in Python before llama.cpp sees it.

llama.cpp aborts (no exception) on files that parse but carry impossible metadata or tensor
extents; everything it would trip over is refused here with a message naming the file."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from edgellm.errors import BadModelFile

KNOWN_ARCHITECTURES = frozenset(gguf.MODEL_ARCH_NAMES.values())
_FILE_TYPES = {t.value: t.name.removeprefix("MOSTLY_") for t in gguf.LlamaFileType}


@dataclass(frozen=True)
class GGUFInfo:
    """What `edgellm show` prints and what the planner needs, read from the header alone."""

    path: Path
    file_size: int
    architecture: str
    name: str
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


def _scalar(field: gguf.ReaderField) -> object:
    """A metadata value as a Python scalar, string or (for arrays) its length."""
    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
        return len(field.data)
    value = field.contents()
    return value


def inspect(path: str | os.PathLike[str]) -> GGUFInfo:
    """Validate ``path`` as a GGUF file llama.cpp can load and summarise it, or raise BadModelFile."""
    p = Path(path)
    if not p.exists():
        raise BadModelFile(p, "no such file (give a .gguf path, or a model name from `edgellm list`)")
    if p.is_dir():
        raise BadModelFile(p, "is a directory, not a .gguf file (give the .gguf file inside it)")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        hint = " (a safetensors/PyTorch checkpoint? convert it with `edgellm quantize`)" if size else ""
        raise BadModelFile(p, f"not a GGUF file (no GGUF magic){hint}")
    try:
        reader = _CheckedReader(p, "r")
    except _TensorProblem as err:
        raise BadModelFile(p, f"{err}; re-download or re-convert it") from None
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, MemoryError) as err:
        raise BadModelFile(p, f"corrupt or truncated GGUF header ({err}); re-download or re-convert it") from None

    fields = {name: _scalar(f) for name, f in reader.fields.items()}
    if not reader.tensors:
        raise BadModelFile(p, "GGUF has no tensors (a vocabulary-only file?)")
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise BadModelFile(p, "GGUF has no general.architecture; it is not a model file")
    if arch not in KNOWN_ARCHITECTURES:
        raise BadModelFile(p, f"architecture '{arch}' is not supported by this llama.cpp build")

    def num(key: str, default: int = 0) -> int:
        value = fields.get(f"{arch}.{key}", default)
        return int(value) if isinstance(value, (int, np.integer)) else default

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
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    file_type = fields.get("general.file_type")
    template = fields.get("tokenizer.chat_template")
    return GGUFInfo(
        path=p,
        file_size=size,
        architecture=arch,
        name=str(fields.get("general.name") or p.stem),
        file_type=_FILE_TYPES.get(int(file_type), str(file_type)) if file_type is not None else _guess_type(types),
        parameters=sum(int(t.n_elements) for t in reader.tensors),
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


class _TensorProblem(Exception):
    pass


class _CheckedReader(gguf.GGUFReader):
    """gguf's reader, checking each tensor's type and extent before it maps the tensor's data:
    the stock reader turns a bad offset into a numpy reshape error, llama.cpp into a crash."""

    def _build_tensors(self, start_offs: int, fields: list[gguf.ReaderField]) -> None:
        size = len(self.data)
        for f in fields:
            _, name_data, _, dims, raw_type, offset = f.parts
            name = bytes(name_data).decode("utf-8", errors="replace")
            try:
                qtype = gguf.GGMLQuantizationType(int(raw_type[0]))
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise _TensorProblem(f"tensor {name} has unknown type {int(raw_type[0])}") from None
            shape = [int(d) for d in dims]
            n = math.prod(shape)
            if n <= 0 or shape[0] % block:
                raise _TensorProblem(f"tensor {name} has impossible shape {shape} for {qtype.name}")
            end = start_offs + int(offset[0]) + n // block * type_size
            if end > size:
                raise _TensorProblem(
                    f"truncated or corrupt: tensor {name} lies outside the file (ends at byte {end}, file has {size})"
                )
        super()._build_tensors(start_offs, fields)


def _guess_type(types: dict[str, int]) -> str:
    """Most common non-f32 tensor type, for files without general.file_type."""
    quant = {k: v for k, v in types.items() if k != "F32"} or types
    return max(quant, key=lambda k: quant[k])
