"""`edgellm quantize SRC --report`: quantize, then score every output against the float model
(edgellm.measure.quant_report). Here, in the commands, because it drives both the converter
(``quantize``) and measurement, which never import each other."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import quantize
from edgellm.commands.quantize import output_folder
from edgellm.errors import EdgeLLMError
from edgellm.measure.quant_report import FLOAT_FILE_TYPES, report
from edgellm.models.gguf_file import inspect
from quantize.llamacpp import parse_types


def quantize_and_report(
    src: str, types: str, *, out: str | None, outdir: str | None, threads: int | None, force: bool,
    loras: Sequence[str] = (), imatrix: object | None = None,
) -> list:  # fmt: skip
    """`edgellm quantize SRC --type ... --report`: quantize, then report every output against the
    float model. The reference is SRC if it is a float GGUF, the float output if one was asked
    for, else an f16 written to a temporary folder beside the outputs and deleted afterwards.
    With ``imatrix`` (an ImatrixRequest) each type is also quantized without the matrix, in a
    temporary folder, and reported beside the weighted output."""
    wanted = parse_types(types)
    source = Path(src).expanduser()
    folder = output_folder(src, out, outdir)
    png = folder / f"{source.stem}-quant-report.png"
    if png.exists() and not force:
        raise EdgeLLMError(f"{png}: already exists (the report plot); pass --force to overwrite it")
    common = {"out": out, "outdir": outdir, "threads": threads, "force": force, "imatrix": imatrix}
    # without a matrix too, for the types llama.cpp quantizes without one
    plain = [t for t in wanted if not t.is_float and not t.needs_imatrix] if imatrix is not None else []

    def report_all(ref: Path, weighted: list[Path]) -> None:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".edgellm-report-") as scratch:
            unweighted = [o.path for o in quantize.run(ref, plain, outdir=scratch, threads=threads)] if plain else []
            report(ref, unweighted + weighted, png)

    if source.is_file():
        if inspect(source).file_type not in FLOAT_FILE_TYPES:
            raise EdgeLLMError(f"{source}: --report compares with the float model; give an f16/bf16/f32 GGUF as SRC")
        outputs = quantize.run(source, wanted, **common)
        report_all(source, [o.path for o in outputs])
        return outputs
    float_types = [t for t in wanted if t.is_float]
    if float_types:
        outputs = quantize.run(source, wanted, loras=loras, **common)
        ref = next(o.path for o in outputs if o.type == float_types[0].name)
        report_all(ref, [o.path for o in outputs if o.path != ref])
        return outputs
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".edgellm-report-") as scratch:
        ref = quantize.run(source, "f16", outdir=scratch, loras=loras)[0].path
        outputs = quantize.run(ref, wanted, **{**common, "outdir": outdir or (None if out else str(folder))})
        report_all(ref, [o.path for o in outputs])
    return outputs
