"""What `edgellm quantize --imatrix [FILE] [--calibration TEXT] [--chunks N]` asks for, and getting
it: a saved matrix read and checked against the model, or one computed on the float model and
saved beside the outputs (so the next run can pass it as FILE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgellm.models.gguf_header import read_header
from quantize.errors import OutputError
from quantize.imatrix import calibration, files
from quantize.imatrix.compute import DEFAULT_CTX, Plan, chunk_progress, compute
from quantize.imatrix.files import Imatrix


@dataclass(frozen=True)
class ImatrixRequest:
    """``file`` to reuse one, else computed from ``calibration`` (None: bundled) in chunks of
    ``n_ctx`` tokens, at most ``chunks`` of them."""

    file: Path | None = None
    calibration: str | None = None
    chunks: int | None = None
    n_ctx: int = DEFAULT_CTX

    def __post_init__(self) -> None:
        if self.file is not None and (self.calibration is not None or self.chunks is not None):
            raise OutputError("--imatrix FILE reuses a saved matrix; --calibration and --chunks compute one: "
                              "give one or the other")  # fmt: skip

    def read_early(self) -> Imatrix | None:
        """A saved matrix, read before any conversion so that a bad file fails first."""
        return files.read(self.file) if self.file is not None else None


def weight_shapes(model: Path) -> dict[str, tuple[int, ...]]:
    """Weight name → ggml shape, from the GGUF's header."""
    return {t.name: t.shape for t in read_header(model).tensors}


def obtain(request: ImatrixRequest, model: Path, save_to: Path, *, saved: Imatrix | None = None,
           threads: int | None = None, force: bool = False, progress: bool = True) -> Imatrix:  # fmt: skip
    """The matrix for quantizing the float GGUF ``model``: ``saved`` (checked to fit it), or
    computed on it and written to ``save_to``."""
    if saved is not None:
        files.check_fits(saved, request.file or Path(saved.file), weight_shapes(model))  # the path as given
        return saved
    name, text = calibration.load(request.calibration)
    plan = Plan(name, text, n_ctx=request.n_ctx, max_chunks=request.chunks, threads=threads,
                ctx_option=None)  # `quantize --imatrix` computes on 512-token chunks, no --ctx
    matrix = compute(model, plan, chunk_progress() if progress else None)
    files.write(matrix, save_to, force=force)
    return matrix
