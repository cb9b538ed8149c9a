"""Issue 14, item 3: resource exhaustion from inside a checkpoint. A deflated member of a .bin
that expands to gigabytes, a pickle member larger than any real one, and tokenizer/config files
far larger than any real one are refused before they are inflated or parsed: one line, exit 1,
bounded memory (a child limited to 4 GB of address space), nothing at the output path."""

from __future__ import annotations

import collections
import io
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from quantize.sources import MAX_SIDE_FILE
from quantize.sources.torch_pickle import MAX_INFLATED
from tests import limited

BOMB = 3 << 30  # what the storage member inflates to: 3 GiB of zeros from ~3 MB


def _deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built from one fully flushed 64 MiB block
    repeated (each block stands alone after Z_FULL_FLUSH), so making it takes no time."""
    chunk = 64 << 20
    assert size % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (size // chunk) + c.flush(zlib.Z_FINISH)


def _zeros_crc(size: int) -> int:
    crc, chunk = 0, bytes(64 << 20)
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    return crc


def _zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip archive from (name, stored bytes, method, crc, uncompressed size), written by hand so
    that a member can declare what it inflates to (zipfile would compress the data itself)."""
    body, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data), size,
                               len(raw), 0, 0, 0, 0, 0, len(body)) + raw  # fmt: skip
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0)
        body += raw + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def _torch_pickle(numel: int, shape: tuple[int, ...]) -> bytes:
    """data.pkl as torch.save writes it for {'w': a float32 tensor of ``shape`` over storage '0'}."""
    import torch

    class Storage:
        pass

    class Tensor:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):  # noqa: ANN001, ANN202
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None

        def reducer_override(self, obj):  # noqa: ANN001, ANN202
            if isinstance(obj, Tensor):
                stride = tuple(int(torch.tensor(shape[i + 1 :]).prod()) for i in range(len(shape)))
                return torch._utils._rebuild_tensor_v2, (Storage(), 0, shape, stride, False, collections.OrderedDict())
            return NotImplemented

    out = io.BytesIO()
    Pickler(out, protocol=2).dump(collections.OrderedDict(w=Tensor()))
    return out.getvalue()


def _bin(path: Path, pickled: bytes, storage: tuple[bytes, int, int, int],
         pickle_method: int = zipfile.ZIP_STORED) -> Path:  # fmt: skip
    pkl = pickled if pickle_method == zipfile.ZIP_STORED else zlib.compress(pickled)  # method is what is declared
    return _zip(path, [
        ("archive/data.pkl", pkl, pickle_method, zlib.crc32(pickled), len(pickled)),
        ("archive/byteorder", b"little", 0, zlib.crc32(b"little"), 6),
        ("archive/data/0", *storage),
    ])  # fmt: skip


@pytest.fixture
def folder(models, tmp_path: Path) -> Path:  # noqa: ANN001
    """A real model folder (config, tokenizer) whose weights the test replaces."""
    folder = tmp_path / "model"
    shutil.copytree(models("llama2-70b").folder, folder)
    (folder / "model.safetensors").unlink()
    return folder


def _refused(folder: Path, tmp_path: Path, *words: str) -> None:
    out = tmp_path / "out.gguf"
    limited.one_line_error(limited.cli("quantize", folder, "--type", "f16", "-o", out), *words)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_a_deflate_bomb_in_a_bin(folder: Path, tmp_path: Path) -> None:
    """A 3 GiB storage in ~3 MB: pickle and member agree, so only the inflation cap stops it."""
    assert BOMB > MAX_INFLATED
    data = _deflated_zeros(BOMB)
    assert len(data) < BOMB // 500
    _bin(folder / "pytorch_model.bin", _torch_pickle(BOMB // 4, (BOMB // 4 // 1024, 1024)),
         (data, zipfile.ZIP_DEFLATED, _zeros_crc(BOMB), BOMB))  # fmt: skip
    _refused(folder, tmp_path, "pytorch_model.bin", "the compressed storage of tensor 'w' declares 3,221,225,472 bytes")


def test_a_member_larger_than_its_pickle_says(folder: Path, tmp_path: Path) -> None:
    """The pickle says 16 floats; the member declares 3 GiB: refused before reading it."""
    _bin(folder / "pytorch_model.bin", _torch_pickle(16, (4, 4)),
         (_deflated_zeros(BOMB), zipfile.ZIP_DEFLATED, _zeros_crc(BOMB), BOMB))  # fmt: skip
    _refused(folder, tmp_path, "storage of tensor 'w' declares 3,221,225,472 bytes but its pickle says 16 x 4")


def test_a_member_that_inflates_past_what_it_declares(tmp_path: Path) -> None:
    """Declares 64 bytes (what the pickle says), holds a deflate stream of 64 MiB: reading stops at
    the declared 64 bytes; with a CRC that does not match them, it is a one-line error."""
    from quantize.errors import CheckpointError
    from quantize.sources.torch_pickle import read_archive

    stream = _deflated_zeros(64 << 20)
    good = (stream, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(64)), 64)
    path = _bin(tmp_path / "ok.bin", _torch_pickle(16, (4, 4)), good)
    (tensor,) = read_archive(path).values()
    assert tensor.read_rows(0, 4).tolist() == [[0.0] * 4] * 4
    path = _bin(tmp_path / "bad.bin", _torch_pickle(16, (4, 4)), (stream, zipfile.ZIP_DEFLATED, 1234, 64))
    (tensor,) = read_archive(path).values()
    with pytest.raises(CheckpointError, match=r"bad.bin: the storage of tensor 'w' is corrupt \(Bad CRC-32"):
        tensor.read_rows(0, 4)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_members_zipfile_cannot_bound_are_refused(folder: Path, tmp_path: Path, method: int) -> None:
    _bin(folder / "pytorch_model.bin", _torch_pickle(16, (4, 4)), (bytes(64), 0, zlib.crc32(bytes(64)), 64),
         pickle_method=method)  # fmt: skip
    _refused(folder, tmp_path, "its pickle (data.pkl) is compressed with method", "torch.save never writes")


def test_a_pickle_member_larger_than_any_real_one(folder: Path, tmp_path: Path) -> None:
    pickled = _torch_pickle(16, (4, 4))
    path = _bin(folder / "pytorch_model.bin", pickled, (bytes(64), 0, zlib.crc32(bytes(64)), 64))
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")  # the central entry of data.pkl comes first
    struct.pack_into("<L", raw, at + 24, 1 << 31)  # its declared uncompressed size
    path.write_bytes(bytes(raw))
    _refused(folder, tmp_path, "its pickle (data.pkl) declares 2,147,483,648 bytes")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.model", "tokenizer_config.json"])
def test_side_files_far_larger_than_any_real_one(models, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    """A 2 GB (sparse) file: refused by its size, before a byte is read."""
    folder = tmp_path / "model"
    shutil.copytree(models("llama2-70b").folder, folder)
    with open(folder / name, "r+b") as fh:
        fh.truncate(2 << 30)
    _refused(folder, tmp_path, f"{folder / name}: 2,147,483,648 bytes, far more than any real {name}")


def test_a_tokenizer_json_at_the_cap_parses_in_bounded_memory(tmp_path: Path) -> None:
    """Just under the cap, the costliest JSON there is (empty lists: ~20x in Python objects)
    still fits a 4 GB process: the cap is what bounds memory, not luck."""
    path = tmp_path / "tokenizer.json"
    n = (MAX_SIDE_FILE - 2) // 3
    path.write_bytes(b"[" + b"[]," * (n - 1) + b"[]]")
    assert path.stat().st_size <= MAX_SIDE_FILE
    script = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limited.ADDRESS_SPACE},) * 2)\n"
              "from pathlib import Path; from quantize.vocab import _tokenizer_json\n"
              f"_tokenizer_json(Path({str(path)!r}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "MemoryError" not in done.stderr, done.stderr[-2000:]
    assert "VocabMismatch" in done.stderr and "expected a JSON object" in done.stderr
