"""The "map" step: what each GGUF tensor is made of, and how its rows are streamed and converted.

A TensorPlan reads its source in row blocks of a few MiB, reorders rows if the family asks (llama's
Q/K rotary layout), converts the dtype and hands the block to the writer: peak memory is a few
blocks, whatever the size of the tensor or the model."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from math import prod
from typing import TYPE_CHECKING

import gguf
import numpy as np

from quantize.errors import CheckpointError, UnsupportedModel

if TYPE_CHECKING:
    from quantize.families import Family, HParams
    from quantize.sources import Checkpoint, TensorRef

Q = gguf.GGMLQuantizationType
FLOAT_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16}
# how source dtypes (safetensors spelling) are held in numpy; bf16 as its raw 16 bits
SOURCE_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),
}
_NUMPY_OF = {Q.F32: np.dtype(np.float32), Q.F16: np.dtype(np.float16), Q.BF16: np.dtype(np.uint16)}
_SOURCE_TYPE = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16}
BLOCK_BYTES = 8 << 20  # rows are read and converted ~8 MiB at a time


@dataclass(frozen=True)
class RowTransform:
    """A reordering of rows, applied block by block; a block never splits a group of ``align`` rows."""

    align: int
    apply: Callable[[np.ndarray], np.ndarray]


def unpermute_rope(head_dim: int) -> RowTransform:
    """HF stores llama's Q/K rows with each head's rotary halves interleaved differently from Meta's
    layout, which llama.cpp expects: within each head, row ``h*half + i`` goes to ``2*i + h``."""

    def apply(rows: np.ndarray) -> np.ndarray:
        heads = rows.shape[0] // head_dim
        return rows.reshape(heads, 2, head_dim // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)

    return RowTransform(align=head_dim, apply=apply)


def output_type(ndim: int, outtype: Q) -> Q:
    """1-D tensors (norms, biases) stay f32, as llama.cpp computes them in f32 anyway."""
    return Q.F32 if ndim == 1 else outtype


@cache
def _table(src: str, dst: Q) -> np.ndarray:
    """Every 16-bit source value converted once by numpy (exact, round-to-nearest-even, subnormals,
    inf and NaN included): a 64K-entry table that fits in L2, so a conversion is one lookup."""
    bits = np.arange(1 << 16, dtype=np.uint32)
    values = (bits << 16).view(np.float32) if src == "BF16" else bits.astype(np.uint16).view(np.float16)
    with np.errstate(over="ignore"):
        return values.astype(_NUMPY_OF[dst])


_SUB = 1 << 18  # elements per lookup pass: source, table and result stay in cache


def convert_rows(raw: np.ndarray, src: str, dst: Q) -> np.ndarray:
    """``raw`` (source dtype, bf16 as uint16) as ``dst`` (bf16 as uint16); no copy when equal."""
    src_type = _SOURCE_TYPE[src]
    if src_type == dst:
        return raw
    flat = raw.reshape(-1)
    out = np.empty(flat.size, _NUMPY_OF[dst])
    if src == "BF16" and dst == Q.F32:
        np.left_shift(flat, 16, out=out.view(np.uint32), dtype=np.uint32)
    elif src in ("BF16", "F16") and dst != Q.BF16:
        table, bits = _table(src, dst), flat.view(np.uint16)
        for i in range(0, flat.size, _SUB):
            np.take(table, bits[i : i + _SUB], out=out[i : i + _SUB], mode="wrap")
    elif dst == Q.BF16:
        out = gguf.quants.quantize(flat.astype(np.float32, copy=False), Q.BF16)
    else:
        for i in range(0, flat.size, _SUB):
            out[i : i + _SUB] = flat[i : i + _SUB]
    return out.reshape(raw.shape)


@dataclass
class TensorPlan:
    """One GGUF tensor: its name, where its data comes from, and what it becomes."""

    name: str
    source: TensorRef
    out_type: Q
    transform: RowTransform | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * _NUMPY_OF[self.out_type].itemsize

    @property
    def source_itemsize(self) -> int:
        return SOURCE_DTYPES[self.source.dtype].itemsize

    @property
    def numpy_dtype(self) -> np.dtype:
        return _NUMPY_OF[self.out_type]

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[np.ndarray]:
        """The converted tensor, a block of rows at a time, in file order."""
        rows = self.shape[0] if self.shape else 1
        row_bytes = max(1, prod(self.shape[1:]) * SOURCE_DTYPES[self.source.dtype].itemsize)
        align = self.transform.align if self.transform else 1
        step = max(align, block_bytes // row_bytes // align * align)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            raw = self.source.read_rows(start, stop)
            if self.transform is not None:
                raw = self.transform.apply(raw)
            yield convert_rows(raw, self.source.dtype, self.out_type)
            del raw
            self.source.release(start, stop)


def _check_dtype(ref: TensorRef) -> None:
    if ref.dtype not in SOURCE_DTYPES:
        raise UnsupportedModel(
            f"{ref.file}: tensor '{ref.name}' has dtype {ref.dtype}; only F32, F16 and BF16 weights can be converted"
        )


def plan_from_map(family: Family, ckpt: Checkpoint, hp: HParams, outtype: Q) -> list[TensorPlan]:
    """Every checkpoint tensor mapped through gguf's TensorNameMap, shape-checked against the config;
    any missing, unknown or misshapen tensor is an error before a byte is written."""
    from quantize.families import matches_any

    tmap = gguf.get_tensor_name_map(family.gguf_arch, hp.n_layer)
    allowed = set(family.required) | set(family.optional)
    shapes = family.expected_shapes(hp)
    plans: list[TensorPlan] = []
    for hf_name, ref in ckpt.tensors.items():
        if matches_any(family.ignored, hf_name):
            continue
        found = tmap.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None or found[0] not in allowed:
            raise _unknown_tensor(ref, hp, family)
        kind, name = found
        expected = shapes[kind][:1] if hf_name.endswith(".bias") else shapes[kind]
        if tuple(ref.shape) != tuple(expected):
            raise CheckpointError(
                f"{ref.file}: tensor '{hf_name}' has shape {list(ref.shape)} but {ckpt.config_path.name} implies "
                f"{list(expected)}: the weights and config.json belong to different models"
            )
        _check_dtype(ref)
        plans.append(
            TensorPlan(
                name, ref, family.tensor_type(kind, len(ref.shape), outtype), family.transform_for(kind, hp, ckpt)
            )
        )
    _check_complete(plans, family, hp, ckpt)
    plans.sort(key=lambda p: p.source.locator)
    return plans


def _unknown_tensor(ref: TensorRef, hp: HParams, family: Family) -> Exception:
    block = re.search(r"\.(\d+)\.", ref.name)
    if block and int(block.group(1)) >= hp.n_layer:
        return CheckpointError(
            f"{ref.file}: tensor '{ref.name}' is in layer {block.group(1)} but config.json says "
            f"num_hidden_layers={hp.n_layer}: the weights and config.json belong to different models"
        )
    return UnsupportedModel(f"{ref.file}: tensor '{ref.name}' is not part of a {family.name} model")


def _check_complete(plans: list[TensorPlan], family: Family, hp: HParams, ckpt: Checkpoint) -> None:
    have = {p.name.removesuffix(".weight") for p in plans}
    for kind in family.required:
        pattern = gguf.TENSOR_NAMES[kind]
        names = [pattern.format(bid=i) for i in range(hp.n_layer)] if "{bid}" in pattern else [pattern]
        for name in names:
            if name not in have:
                raise CheckpointError(
                    f"{ckpt.weights_label}: no weights for '{name}' ({kind.name.lower()}); the checkpoint is "
                    "incomplete (a shard missing?) or not a plain model (an adapter?)"
                )
