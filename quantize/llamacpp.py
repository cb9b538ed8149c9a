"""The "quantize" step: llama.cpp's own quantizer (`llama_model_quantize`) on all cores.

llama.cpp aborts the process (no exception) on some bad inputs, so the input is validated by
`edgellm.models.gguf_file.inspect` first. The call runs on a worker thread (ctypes releases the GIL);
the main thread draws progress from the growing output file and stays responsive to Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import gguf

from edgellm.models import gguf_file
from quantize.errors import OutputError
from quantize.imatrix.files import Imatrix
from quantize.progress import Progress
from quantize.tensors import FLOAT_TYPES

F = gguf.LlamaFileType


@dataclass(frozen=True)
class FileType:
    """A llama.cpp file type: its name, llama_ftype and approximate bits per weight (block sizes,
    plus the tensors llama.cpp keeps at higher precision in a mix; for disk checks and progress)."""

    name: str
    ftype: F
    bpw: float
    needs_imatrix: bool = False  # llama.cpp refuses it without an importance matrix

    @property
    def is_float(self) -> bool:
        return self.name in FLOAT_TYPES


FILE_TYPES: dict[str, FileType] = {
    t.name: t
    for t in (
        FileType("f32", F.ALL_F32, 32.0),
        FileType("f16", F.MOSTLY_F16, 16.0),
        FileType("bf16", F.MOSTLY_BF16, 16.0),
        FileType("q8_0", F.MOSTLY_Q8_0, 8.5),
        FileType("q4_0", F.MOSTLY_Q4_0, 4.5),
        FileType("q4_1", F.MOSTLY_Q4_1, 5.0),
        FileType("q5_0", F.MOSTLY_Q5_0, 5.5),
        FileType("q5_1", F.MOSTLY_Q5_1, 6.0),
        FileType("q2_k", F.MOSTLY_Q2_K, 3.0),
        FileType("q3_k_s", F.MOSTLY_Q3_K_S, 3.50),
        FileType("q3_k_m", F.MOSTLY_Q3_K_M, 3.9),
        FileType("q3_k_l", F.MOSTLY_Q3_K_L, 4.3),
        FileType("q4_k_s", F.MOSTLY_Q4_K_S, 4.6),
        FileType("q4_k_m", F.MOSTLY_Q4_K_M, 4.85),
        FileType("q5_k_s", F.MOSTLY_Q5_K_S, 5.55),
        FileType("q5_k_m", F.MOSTLY_Q5_K_M, 5.7),
        FileType("q6_k", F.MOSTLY_Q6_K, 6.56),
        FileType("iq4_nl", F.MOSTLY_IQ4_NL, 4.5),
        FileType("iq4_xs", F.MOSTLY_IQ4_XS, 4.25),
        # 1-3 bit types: llama-quantize's figures; those marked need an importance matrix
        FileType("q2_k_s", F.MOSTLY_Q2_K_S, 2.9, needs_imatrix=True),
        FileType("iq1_s", F.MOSTLY_IQ1_S, 1.56, needs_imatrix=True),
        FileType("iq1_m", F.MOSTLY_IQ1_M, 1.75, needs_imatrix=True),
        FileType("iq2_xxs", F.MOSTLY_IQ2_XXS, 2.06, needs_imatrix=True),
        FileType("iq2_xs", F.MOSTLY_IQ2_XS, 2.31, needs_imatrix=True),
        FileType("iq2_s", F.MOSTLY_IQ2_S, 2.5, needs_imatrix=True),
        FileType("iq2_m", F.MOSTLY_IQ2_M, 2.7, needs_imatrix=True),
        FileType("iq3_xxs", F.MOSTLY_IQ3_XXS, 3.06, needs_imatrix=True),
        FileType("iq3_xs", F.MOSTLY_IQ3_XS, 3.3, needs_imatrix=True),  # its q, k and middle ffn are iq3_xxs
        FileType("iq3_s", F.MOSTLY_IQ3_S, 3.44),
        FileType("iq3_m", F.MOSTLY_IQ3_M, 3.66),
    )
}
DEFAULT_TYPE = "q4_k_m"


def parse_types(text: str) -> list[FileType]:
    """``"Q4_K_M,q8_0"`` → file types, case-insensitive, duplicates dropped, order kept."""
    found: list[FileType] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name not in FILE_TYPES:
            raise OutputError(f"unknown type '{part.strip()}'; choose from: {', '.join(FILE_TYPES)}")
        if FILE_TYPES[name] not in found:
            found.append(FILE_TYPES[name])
    if not found:
        raise OutputError(f"no type given; choose from: {', '.join(FILE_TYPES)}")
    return found


def check_input(src: Path, fix: str = "quantize from the model folder or an f32/f16/bf16 GGUF (re-quantizing "
                "compounds the error)") -> gguf_file.GGUFInfo:  # fmt: skip
    """A GGUF from elsewhere, checked for everything llama.cpp would abort on, and not quantized."""
    info = gguf_file.inspect(src)
    quantized = sorted(set(info.tensor_types) - {"F32", "F16", "BF16"})
    if quantized:
        raise OutputError(f"{src}: already quantized ({', '.join(quantized)}); {fix}")
    return info


def check_imatrix_given(wanted: list[FileType], have: bool) -> None:
    """Types llama.cpp would refuse mid-file without an importance matrix, refused before any work."""
    missing = [t.name for t in wanted if t.needs_imatrix]
    if missing and not have:
        raise OutputError(f"{', '.join(missing)} need{'s' if len(missing) == 1 else ''} an importance matrix: add "
                          "--imatrix (computed on bundled calibration text) or --imatrix FILE")  # fmt: skip


def imatrix_params(params: object, imatrix: Imatrix) -> list[object]:
    """Point ``params`` (llama_model_quantize_params) at the matrix's means and add the
    `quantize.imatrix.*` metadata as llama-quantize does (same keys, order and types: file,
    dataset, entries_count, chunks_count). Returns what must stay alive during the call."""
    import ctypes

    import llama_cpp

    means = imatrix.means()
    data = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()  # NULL-terminated
    for item, (name, values) in zip(data, means.items(), strict=False):
        item.name, item.size = name.encode(), values.size
        item.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    str_kv, int_kv = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
    pairs: list[tuple[str, int, object]] = [("file", str_kv, imatrix.file)]
    if imatrix.datasets:
        pairs.append(("dataset", str_kv, imatrix.datasets[0]))
    pairs.append(("entries_count", int_kv, len(means)))
    if imatrix.chunk_count > 0:
        pairs.append(("chunks_count", int_kv, imatrix.chunk_count))
    kv = (llama_cpp.llama_model_kv_override * (len(pairs) + 1))()  # terminated by an empty key
    for item, (key, tag, value) in zip(kv, pairs, strict=False):
        item.key, item.tag = f"quantize.imatrix.{key}".encode(), tag
        if tag == str_kv:
            item.value.val_str = str(value).encode()[:127]  # llama-quantize's strncpy(.., 127)
        else:
            item.value.val_i64 = int(value)
    params.imatrix = data
    params.kv_overrides = kv
    return [means, data, kv]


def quantize_file(src: Path, dst: Path, ftype: FileType, *, n_params: int, threads: int | None = None,
                  progress: bool = True, imatrix: Imatrix | None = None) -> None:  # fmt: skip
    """``src`` (a float GGUF: one we wrote, or one `check_input` passed) → ``dst`` in ``ftype`` by
    llama.cpp, weighted by ``imatrix`` if given; ``dst`` is written in place (callers pass a
    temporary name)."""
    import llama_cpp

    from edgellm.runtime import llama_log

    llama_log.install(verbose=False)
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads or os.cpu_count() or 1
    params.ftype = int(ftype.ftype)
    alive = imatrix_params(params, imatrix) if imatrix is not None else []  # noqa: F841 (read by llama.cpp)
    expected = max(1, int(n_params * ftype.bpw / 8))
    result: list[int] = []

    def work() -> None:
        result.append(llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params))

    marker = llama_log.mark()
    worker = threading.Thread(target=work, name="llama-quantize", daemon=True)
    with Progress(f"{ftype.name}", expected, enabled=progress) as bar:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            with contextlib.suppress(FileNotFoundError):
                bar.set(min(dst.stat().st_size, expected))
        if not result or result[0] != 0:
            problems = llama_log.errors_since(marker)
            why = problems[0].strip() if problems else f"error code {result[0] if result else '?'}"
            raise OutputError(f"{src}: llama.cpp could not quantize it to {ftype.name}: {why}")
        bar.total = bar.done = dst.stat().st_size  # "done:" reports the file written, not the estimate
