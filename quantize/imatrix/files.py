"""Importance-matrix files as llama.cpp writes and reads them (common/imatrix-loader.cpp).

GGUF (what llama-imatrix writes by default): `general.type = imatrix`, `imatrix.datasets`
(array of strings), `imatrix.chunk_count`, `imatrix.chunk_size`; per weight, in name order,
`<weight>.in_sum2` (F32, [n_cols, n_mat]: sums of squared activations) and `<weight>.counts`
(F32, [1, n_mat]: rows summed). Legacy `.dat` (`--output-format dat`): int32 entry count, then
per entry int32 name length, name, int32 ncall, int32 n_values, float32 values holding
mean * ncall; then optionally int32 chunk count, int32 length and the dataset name.

The means handed to the quantizer are computed exactly as llama-quantize's `load_imatrix` does
(float32 sum / float32 count, 1 where a matrix saw no rows), so a file gives the same quantized
bytes here as with llama.cpp's tool."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from edgellm.models.gguf_header import HeaderError, read_header
from quantize.errors import OutputError
from quantize.imatrix.collect import Entry
from quantize.sources import read_capped
from quantize.writer import atomic_output

SUMS, COUNTS = ".in_sum2", ".counts"
KEYS = gguf.Keys.IMatrix


MAX_LEGACY = 1 << 30  # bytes: a legacy .dat of the largest mixture of experts is a few hundred MB


class ImatrixFileError(OutputError):
    """A file that is not a readable importance matrix; the message names it and the fix."""


@dataclass
class Imatrix:
    """An importance matrix: per weight, float32 ``sums`` (n_mat, n_cols) and ``counts`` (n_mat,).
    A legacy file holds means * ncall and ncall instead (``legacy``)."""

    entries: dict[str, Entry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False
    # the file's name (never its folder: it is recorded in the quantized GGUFs people share)
    file: str = ""

    def means(self) -> dict[str, np.ndarray]:
        """Per weight the flat float32 mean squared activation per column (experts one after
        the other): what `llama_model_imatrix_data` carries."""
        out = {}
        for name, e in self.entries.items():
            sums = e.sums.astype(np.float32)
            counts = e.counts.astype(np.float32)
            if self.legacy:
                mean = sums / counts[0] if counts[0] > 0 else sums
            else:
                safe = np.where(counts > 0, counts, np.float32(1))
                mean = np.where(counts[:, None] > 0, sums / safe[:, None], np.float32(1))
            out[name] = np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        return out

    def describe(self) -> str:
        where = f" from {', '.join(self.datasets)}" if self.datasets else ""
        size = f" of {self.chunk_size} tokens" if self.chunk_size else ""
        return f"{len(self.entries)} matrices, {self.chunk_count} chunks{size}{where}"


def write(imatrix: Imatrix, path: Path, *, force: bool = False) -> Path:
    """``path`` ending in `.dat` gets the legacy format, anything else GGUF (llama-imatrix's rule,
    `--output-format`); written under a temporary name and renamed when complete."""
    with atomic_output(path, force) as temp:
        (_write_legacy if path.suffix == ".dat" else _write_gguf)(imatrix, temp)
    imatrix.file = path.name
    return path


def _write_gguf(imatrix: Imatrix, path: Path) -> None:
    writer = gguf.GGUFWriter(path, arch="")  # no general.architecture, as llama-imatrix: not a model
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(KEYS.DATASETS, list(imatrix.datasets))
    writer.add_uint32(KEYS.CHUNK_COUNT, imatrix.chunk_count)
    writer.add_uint32(KEYS.CHUNK_SIZE, imatrix.chunk_size)
    for name in sorted(imatrix.entries):
        e = imatrix.entries[name]
        writer.add_tensor(name + SUMS, np.ascontiguousarray(e.sums, dtype=np.float32))
        writer.add_tensor(name + COUNTS, e.counts.astype(np.float32).reshape(-1, 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_legacy(imatrix: Imatrix, path: Path) -> None:
    """llama-imatrix's save_imatrix_legacy: means * ncall, ncall = chunks seen (rounded up)."""
    chunk = max(imatrix.chunk_size, 1)
    parts = []
    names = sorted(n for n, e in imatrix.entries.items() if e.counts.any())
    parts.append(struct.pack("<i", len(names)))
    for name in names:
        e = imatrix.entries[name]
        raw = name.encode()
        ncall = -(-int(e.counts.max()) // chunk)
        counts = e.counts.astype(np.float32)
        sums = np.where(counts[:, None] > 0, e.sums.astype(np.float32), np.float32(1))
        values = sums / np.where(counts > 0, counts, np.float32(1))[:, None] * np.float32(ncall)
        parts += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, values.size)]
        parts.append(values.astype("<f4").tobytes())
    dataset = (imatrix.datasets[-1] if imatrix.datasets else "").encode()
    parts += [struct.pack("<ii", imatrix.chunk_count, len(dataset)), dataset]
    path.write_bytes(b"".join(parts))


def read(path: str | Path) -> Imatrix:
    """A GGUF or legacy `.dat` importance matrix (llama-imatrix's or ours)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImatrixFileError(f"{p}: no such file (give an imatrix .gguf or .dat, e.g. from `edgellm imatrix`)")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise ImatrixFileError(f"{p}: cannot read it ({err.strerror})") from None
    imatrix = _read_gguf(p) if magic == b"GGUF" else _read_legacy(p)
    imatrix.file = p.name
    return imatrix


def _read_gguf(path: Path) -> Imatrix:
    try:
        header = read_header(path)
    except HeaderError as err:
        raise ImatrixFileError(f"{path}: corrupt or truncated GGUF header: {err}") from None
    kind = header.fields.get(gguf.Keys.General.TYPE)
    if kind not in (None, gguf.GGUFType.IMATRIX) or KEYS.CHUNK_SIZE not in header.fields:
        what = f"general.type is '{kind}'" if kind else "no imatrix.* metadata"
        raise ImatrixFileError(f"{path}: not an importance matrix ({what}); give one written by llama-imatrix "
                               "or `edgellm imatrix`")  # fmt: skip
    size = path.stat().st_size
    if any(t.offset + t.n_bytes > size for t in header.tensors):
        raise ImatrixFileError(f"{path}: truncated (a tensor lies past the end of the file)")
    reader = gguf.GGUFReader(path)
    datasets_field = reader.fields.get(KEYS.DATASETS)
    datasets = list(datasets_field.contents()) if datasets_field is not None else []
    tensors = {t.name: t for t in reader.tensors}
    entries = {}
    for full, t in tensors.items():
        if not full.endswith(SUMS):
            continue
        name = full.removesuffix(SUMS)
        counts = tensors.get(name + COUNTS)
        if counts is None or t.tensor_type != gguf.GGMLQuantizationType.F32 or counts.tensor_type != t.tensor_type:
            raise ImatrixFileError(f"{path}: {name} needs F32 {SUMS} and {COUNTS} tensors")
        n_mat = int(counts.n_elements)
        if n_mat < 1 or t.n_elements % n_mat:
            raise ImatrixFileError(f"{path}: {name} has {t.n_elements} sums for {n_mat} counts")
        sums = np.array(t.data, dtype=np.float32).reshape(n_mat, -1)
        entries[name] = Entry(sums, np.rint(np.array(counts.data, dtype=np.float64).reshape(-1)).astype(np.int64))
    if not entries:
        raise ImatrixFileError(f"{path}: no {SUMS} tensors; not an importance matrix")
    fields = header.fields
    return Imatrix(entries, datasets, int(fields.get(KEYS.CHUNK_COUNT, 0)), int(fields[KEYS.CHUNK_SIZE]))


def _read_legacy(path: Path) -> Imatrix:
    data = read_capped(path, ImatrixFileError, limit=MAX_LEGACY)
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(data):
            raise ImatrixFileError(f"{path}: not an importance matrix (neither GGUF nor a complete legacy .dat)")
        pos += n
        return struct.unpack_from(fmt, data, pos - n)

    (n_entries,) = take("<i")
    if not 1 <= n_entries <= len(data) // 12:
        raise ImatrixFileError(f"{path}: not an importance matrix (neither GGUF nor a legacy .dat)")
    entries = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if not 0 < length <= 1024:
            raise ImatrixFileError(f"{path}: corrupt legacy .dat (a name of {length} bytes)")
        name = take(f"<{length}s")[0].decode("utf-8", errors="replace")
        ncall, nval = take("<ii")
        if nval < 1 or ncall < 0:
            raise ImatrixFileError(f"{path}: corrupt legacy .dat ({name}: {nval} values, {ncall} calls)")
        values = np.frombuffer(take(f"<{4 * nval}s")[0], dtype="<f4").astype(np.float32)
        entries[name] = Entry(values.reshape(1, -1), np.array([ncall], dtype=np.int64))
    chunks, datasets = 0, []
    if pos + 8 <= len(data):
        chunks, length = take("<ii")
        if 0 < length <= len(data) - pos:
            datasets.append(take(f"<{length}s")[0].decode("utf-8", errors="replace"))
    return Imatrix(entries, datasets, chunks, 0, legacy=True)


def check_fits(imatrix: Imatrix, source: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a matrix made for another model before llama.cpp does (it throws mid-file): every
    entry naming one of the model's weights must have that weight's columns x experts."""
    matched = 0
    for name, e in imatrix.entries.items():
        shape = shapes.get(name)
        if shape is None:
            continue
        matched += 1
        want = shape[0] * (shape[2] if len(shape) > 2 else 1)
        if e.sums.size != want:
            raise ImatrixFileError(f"{source}: {name} has {e.sums.size} values but the model's weight needs {want}; "
                                   "the matrix was made for another model (compute one with --imatrix)")  # fmt: skip
    if not matched:
        raise ImatrixFileError(f"{source}: none of its {len(imatrix.entries)} matrices names a weight of this model; "
                               "it was made for another model (compute one with --imatrix)")  # fmt: skip

