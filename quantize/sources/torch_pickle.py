"""pytorch_model*.bin weights (torch.save zip archives) read without torch, by a restricted unpickler.

The pickle inside a .bin can name any Python callable; loading it with torch (or plain pickle) runs
whatever it names. This unpickler resolves only the handful of names that rebuild tensors, each to
a function of ours that records (storage, offset, shape, stride); any other name is refused before
anything runs. Storages are read straight from the archive: memory-mapped when stored uncompressed
(torch.save's default), else decompressed one tensor at a time.

An archive is also a place to hide a bomb: a small deflated member that expands to gigabytes, or a
pickle that builds them. So the pickle's member is size-capped before it is unpickled, every
storage member must declare exactly the bytes its pickle entry says the storage has, tensors must
lie inside it, only stored and deflated members are read (zipfile caps deflate's output at the
declared size; bzip2 and lzma it does not), and a compressed member is decompressed only up to
``MAX_INFLATED`` bytes, into one buffer of the declared size."""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from quantize.errors import CheckpointError, UnsafeCheckpoint
from quantize.sources import Checkpoint, load_config
from quantize.sources.mapped import ITEMSIZE, NUMPY, MappedFile, MappedTensor
from quantize.sources.shards import check_index, label, weight_files

INDEX = "pytorch_model.bin.index.json"
MAX_PICKLE = 64 << 20  # data.pkl of a 70B model is ~150 KB: a few hundred bytes per tensor
MAX_INFLATED = 1 << 30  # torch.save never compresses; a re-zipped archive's storage is inflated whole
_READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    key: str
    numel: int


@dataclass(frozen=True)
class _Rebuilt:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Rebuilt:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    return _Rebuilt(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _Rebuilt, *_: Any) -> _Rebuilt:
    return data


_STORAGES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}  # fmt: skip
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGES.items()},
}


class _TensorsOnly(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpoint(
                f"{self.path}: refused: its pickle asks for '{module}.{name}', which does not rebuild a tensor "
                "(nothing was executed); use the model's .safetensors files or re-save it from a trusted source"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("storage of unknown type")
        return _Storage(storage_type.dtype, str(key), int(numel))


@dataclass
class StridedTensor:
    """A tensor in a compressed entry or a non-contiguous view of its storage (both rare): the
    storage is loaded on first read and dropped once the last rows are released."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path
    offset: int
    stride: tuple[int, ...]
    load: Callable[[], bytes | bytearray | memoryview]
    _storage: np.ndarray | None = None

    @property
    def locator(self) -> tuple[str, int]:
        return (str(self.file), 0)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        if self._storage is None:
            self._storage = np.frombuffer(self.load(), dtype=NUMPY[self.dtype])
        item = self._storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            self._storage[self.offset :], self.shape, tuple(s * item for s in self.stride), writeable=False
        )
        return np.ascontiguousarray(view[start:stop])

    def release(self, start: int, stop: int) -> None:
        if stop >= (self.shape[0] if self.shape else 1):
            self._storage = None


def open_checkpoint(folder: Path) -> Checkpoint | None:
    files, weight_map = weight_files(folder, INDEX, ("pytorch_model*.bin",))
    if not files:
        return None
    config, config_path = load_config(folder)
    tensors: dict[str, Any] = {}
    for path in files:
        for name, ref in read_archive(path).items():
            if name in tensors:
                raise CheckpointError(f"{path}: tensor '{name}' is also in {tensors[name].file.name}")
            tensors[name] = ref
    if weight_map:
        check_index(INDEX, folder, weight_map, {n: t.file for n, t in tensors.items()})
    return Checkpoint(folder, config, tensors, label(files), config_path)


def read_archive(path: Path) -> dict[str, Any]:
    """name → tensor reference for one torch.save zip archive."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a zip archive: truncated, corrupt, or saved by PyTorch < 1.6 (legacy format); "
            "re-download it or use the model's .safetensors files"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise CheckpointError(f"{path}: a zip archive without data.pkl, so not a PyTorch checkpoint")
            prefix = pkl[: -len("data.pkl")]
            byteorder = prefix + "byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
                raise CheckpointError(f"{path}: big-endian tensors are not supported")
            infos = {i.filename: i for i in archive.infolist()}
            _check_member(path, infos[pkl], MAX_PICKLE, "its pickle (data.pkl)")
            with archive.open(pkl) as fh:
                state = _TensorsOnly(fh, path).load()
            mapped = MappedFile(path)
            return {
                name: _reference(path, archive, infos, prefix, mapped, name, t) for name, t in _tensors(state, path)
            }
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({err}); re-download it") from None


def _tensors(state: Any, path: Path):  # noqa: ANN202 - yields (name, _Rebuilt)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    for name, value in state.items():
        if isinstance(value, _Rebuilt):
            yield str(name), value


def _check_member(path: Path, info: zipfile.ZipInfo, limit: int, what: str) -> None:
    """A member is read only if zipfile bounds what it inflates to, and it declares at most ``limit``."""
    if info.compress_type not in _READABLE:
        raise UnsafeCheckpoint(
            f"{path}: {what} is compressed with method {info.compress_type}, which torch.save never writes and "
            "which cannot be inflated with bounded memory; use the model's .safetensors files"
        )
    if info.file_size > limit:
        raise UnsafeCheckpoint(
            f"{path}: {what} declares {info.file_size:,} bytes, more than {limit:,}; refused before inflating it "
            "(a zip bomb or a corrupt file); use the model's .safetensors files"
        )


def _reference(
    path: Path, archive: zipfile.ZipFile, infos: dict, prefix: str, mapped: MappedFile, name: str, t: _Rebuilt
) -> Any:
    storage = t.storage
    info = infos.get(f"{prefix}data/{storage.key}")
    itemsize = ITEMSIZE[storage.dtype]
    if info is None:
        raise CheckpointError(f"{path}: storage of tensor '{name}' is missing; re-download it")
    if info.file_size != storage.numel * itemsize:
        raise CheckpointError(
            f"{path}: storage of tensor '{name}' declares {info.file_size:,} bytes but its pickle says "
            f"{storage.numel:,} x {itemsize}; the file is corrupt"
        )
    if any(s < 0 for s in t.stride):
        raise CheckpointError(f"{path}: tensor '{name}' has negative strides {list(t.stride)}; the file is corrupt")
    last = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride, strict=True) if d > 0)
    if any(d == 0 for d in t.shape) or t.offset < 0 or last >= storage.numel:
        raise CheckpointError(f"{path}: tensor '{name}' lies outside its storage; the file is corrupt")
    contiguous = t.stride == tuple(prod(t.shape[i + 1 :]) for i in range(len(t.shape)))
    if info.compress_type == zipfile.ZIP_STORED:
        header = mapped.view(info.header_offset, 30)
        if bytes(header[:4]) != b"PK\x03\x04":
            raise CheckpointError(f"{path}: corrupt zip entry for tensor '{name}'; re-download it")
        n_name, n_extra = struct.unpack("<HH", header[26:30])
        data = info.header_offset + 30 + n_name + n_extra
        if contiguous:
            return MappedTensor(name, t.shape, storage.dtype, mapped, data + t.offset * itemsize)
        return StridedTensor(name, t.shape, storage.dtype, path, t.offset, t.stride,
                             lambda: mapped.view(data, info.file_size))  # fmt: skip
    _check_member(path, info, MAX_INFLATED, f"the compressed storage of tensor '{name}'")

    def load(entry: str = info.filename, size: int = info.file_size) -> bytearray:
        """The whole member, inflated into one buffer of its declared size (zipfile stops there and
        checks the CRC); shorter is corrupt."""
        buf, pos = bytearray(size), 0
        try:
            with zipfile.ZipFile(path) as again, again.open(entry) as fh:
                while pos < size and (chunk := fh.read(min(16 << 20, size - pos))):
                    buf[pos : pos + len(chunk)] = chunk
                    pos += len(chunk)
        except (zipfile.BadZipFile, EOFError, zlib.error) as err:
            raise CheckpointError(f"{path}: the storage of tensor '{name}' is corrupt ({err}); re-download") from None
        if pos != size:
            raise CheckpointError(f"{path}: the storage of tensor '{name}' inflates to {pos:,} of its {size:,} bytes")
        return buf

    return StridedTensor(name, t.shape, storage.dtype, path, t.offset, t.stride, load)
