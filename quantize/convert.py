"""The pipeline: read → map → write (float GGUF) → quantize (llama.cpp), as one call per output.

`prepare` does every check that can fail (config, tensor names and shapes, dtypes, tokenizer
size, template) before anything is written; `run` then writes the float GGUF once and hands it to
llama.cpp's quantizer for every quantized type asked for, deleting it afterwards unless it was
asked for too."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

import gguf

from quantize import naming
from quantize.errors import OutputError
from quantize.families import Family, HParams, find_family
from quantize.families.adapters import FamilyView
from quantize.imatrix.files import Imatrix
from quantize.imatrix.request import ImatrixRequest, obtain
from quantize.llamacpp import (
    DEFAULT_TYPE,
    FILE_TYPES,
    FileType,
    check_imatrix_given,
    check_input,
    parse_types,
    quantize_file,
)
from quantize.progress import Progress
from quantize.sources import Checkpoint, open_checkpoint
from quantize.sources.lora import merge_adapters
from quantize.tensors import FLOAT_TYPES, TensorPlan
from quantize.vocab import Vocab, load_vocab
from quantize.writer import atomic_output, check_writable, scratch_file, write_gguf


@dataclass(frozen=True)
class Output:
    """One file written: where, which type, how big."""

    path: Path
    type: str
    size: int
    parameters: int

    @property
    def bits_per_weight(self) -> float:
        return self.size * 8 / max(self.parameters, 1)


@dataclass
class Conversion:
    """A checkpoint read and checked, ready to be written as a float GGUF."""

    ckpt: Checkpoint
    family: Family
    hp: HParams
    vocab: Vocab
    chat_template: str | list[dict[str, str]] | None
    metadata: gguf.Metadata
    n_params: int

    def plans(self, outtype: str) -> list[TensorPlan]:
        return self.family.plan_tensors(self.ckpt, self.hp, FLOAT_TYPES[outtype])

    def file_name(self, type_name: str) -> str:
        return naming.file_name(self.metadata, type_name)

    @property
    def source_type(self) -> str:
        """The float type closest to the weights as stored: bf16 stays bf16, f16/f32 become f16."""
        dtypes = [t.dtype for t in self.ckpt.tensors.values() if len(t.shape) == 2]
        return "bf16" if dtypes and max(set(dtypes), key=dtypes.count) == "BF16" else "f16"

    def write(self, path: Path, outtype: str, *, progress: bool = True) -> None:
        plans = self.plans(outtype)

        def metadata(w: gguf.GGUFWriter) -> None:
            self.metadata.set_gguf_meta_model(w)
            w.add_type(gguf.GGUFType.MODEL)
            self.family.write_hparams(w, self.hp)
            w.add_file_type(FILE_TYPES[outtype].ftype)
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            self.vocab.write(w)
            if self.chat_template:
                w.add_chat_template(self.chat_template)

        total = sum(prod(p.shape) * p.source_itemsize for p in plans)
        with Progress(f"{outtype}", total, enabled=progress) as bar:
            write_gguf(path, gguf.MODEL_ARCH_NAMES[self.family.gguf_arch], metadata, plans, bar)


def prepare(src: str | Path, loras: Sequence[str | Path] = ()) -> Conversion:
    """Read and check everything about ``src`` (with the PEFT LoRA adapters ``loras`` merged in, in
    order) that could make a conversion fail."""
    ckpt = open_checkpoint(src)
    if loras:
        ckpt = merge_adapters(ckpt, list(loras), FamilyView(ckpt))
    family = find_family(ckpt.config, ckpt.config_path)
    hp = family.hparams(ckpt)
    plans = family.plan_tensors(ckpt, hp, FLOAT_TYPES["f16"])  # names, shapes, dtypes
    vocab = family.fit_vocab(load_vocab(ckpt.tokenizer_folder or ckpt.folder, family.vocab_kinds), hp, ckpt)
    n_params = sum(prod(p.shape) for p in plans)
    return Conversion(
        ckpt=ckpt,
        family=family,
        hp=hp,
        vocab=vocab,
        chat_template=vocab.chat_template or family.chat_template(ckpt, vocab),
        metadata=naming.model_metadata(Path(loras[-1]) if loras else ckpt.folder, n_params, family.general(ckpt)),
        n_params=n_params,
    )


def convert(src: str | Path, outtype: str = "f16", out: str | Path | None = None, *, force: bool = False,
            progress: bool = True, loras: Sequence[str | Path] = ()) -> Output:  # fmt: skip
    """Convert the model folder ``src`` (LoRA adapters ``loras`` merged in) to a float GGUF (f32, f16 or bf16)."""
    return run(src, outtype, out=out, force=force, progress=progress, loras=loras)[0]


def quantize(gguf_in: str | Path, type: str = DEFAULT_TYPE, out: str | Path | None = None, *,
             threads: int | None = None, force: bool = False, progress: bool = True,
             imatrix: ImatrixRequest | None = None) -> Output:  # fmt: skip
    """Quantize a GGUF file to ``type`` with llama.cpp's quantizer (weighted by ``imatrix``)."""
    return run(gguf_in, type, out=out, threads=threads, force=force, progress=progress, imatrix=imatrix)[0]


def run(src: str | Path, types: str | list[FileType] = DEFAULT_TYPE, *, out: str | Path | None = None,
        outdir: str | Path | None = None, threads: int | None = None, force: bool = False,
        progress: bool = True, loras: Sequence[str | Path] = (),
        imatrix: ImatrixRequest | None = None) -> list[Output]:  # fmt: skip
    """What `edgellm quantize` does: every requested type from one model folder (or GGUF file),
    with an importance matrix (reused, or computed on the float model) if ``imatrix`` asks."""
    wanted = parse_types(types) if isinstance(types, str) else types
    check_imatrix_given(wanted, imatrix is not None)
    if imatrix is not None and all(t.is_float for t in wanted):
        raise OutputError("--imatrix weights quantization; add a quantized type (e.g. -t q4_k_m)")
    saved = imatrix.read_early() if imatrix else None
    src = Path(src).expanduser()
    if src.is_file() and src.suffix == ".gguf":
        if loras:
            raise OutputError(f"{src}: --lora merges adapters while converting a model folder, not into a GGUF")
        return _requantize(src, wanted, out, outdir, threads, force, progress, imatrix, saved)
    conv = prepare(src, loras)
    folder = Path(outdir).expanduser() if outdir else conv.ckpt.folder
    targets = _targets(wanted, out, folder, conv.file_name)
    weighting = _Weighting(imatrix, saved, _imatrix_target(out, folder, conv.file_name))
    for path in [*targets.values(), *weighting.new_files]:
        check_writable(path, force)
    floats = [t for t in wanted if t.is_float]
    quants = [t for t in wanted if not t.is_float]
    base = floats[0].name if floats else conv.source_type
    _check_space(conv, targets, base, temp_base=not floats)
    outputs: dict[str, Output] = {}
    for t in floats:
        with atomic_output(targets[t.name], force) as temp:
            conv.write(temp, t.name, progress=progress)
        outputs[t.name] = Output(targets[t.name], t.name, targets[t.name].stat().st_size, conv.n_params)
    if quants:
        if floats:
            matrix = weighting.get(targets[base], threads, force, progress)
            _quantize_all(targets[base], conv.n_params, quants, targets, outputs, threads, force, progress, matrix)
        else:
            with scratch_file(targets[quants[0].name].with_name(conv.file_name(base))) as temp:
                conv.write(temp, base, progress=progress)
                matrix = weighting.get(temp, threads, force, progress)
                _quantize_all(temp, conv.n_params, quants, targets, outputs, threads, force, progress, matrix)
    return [outputs[t.name] for t in wanted]


@dataclass
class _Weighting:
    """The importance matrix a run asked for: none, a saved one, or one to compute and save."""

    request: ImatrixRequest | None
    saved: Imatrix | None
    save_to: Path

    @property
    def new_files(self) -> list[Path]:
        return [self.save_to] if self.request and self.saved is None else []

    def get(self, base: Path, threads: int | None, force: bool, progress: bool) -> Imatrix | None:
        if self.request is None:
            return None
        return obtain(self.request, base, self.save_to, saved=self.saved, threads=threads, force=force,
                      progress=progress)  # fmt: skip


def _imatrix_target(out: str | Path | None, outdir: Path, name) -> Path:  # noqa: ANN001
    """Where a computed matrix is saved: named like the outputs, with `imatrix` for the type
    (`-o` with `{ftype}` fills it in; a plain `-o X.gguf` gets `X.imatrix.gguf`)."""
    if out is None:
        return outdir / name("imatrix")
    text = str(Path(out).expanduser())
    if "{" in text:
        return Path(gguf.fill_templated_filename(text, "imatrix"))
    path = Path(text)
    return path.with_name(f"{path.stem}.imatrix.gguf")


def _quantize_all(base: Path, n_params: int, quants: list[FileType], targets: dict[str, Path],
                  outputs: dict[str, Output], threads: int | None, force: bool, progress: bool,
                  imatrix: Imatrix | None = None) -> None:  # fmt: skip
    """Each quantized type from the float GGUF ``base`` (already checked: ours, or by check_input)."""
    for t in quants:
        with atomic_output(targets[t.name], force) as temp:
            quantize_file(base, temp, t, n_params=n_params, threads=threads, progress=progress, imatrix=imatrix)
        outputs[t.name] = Output(targets[t.name], t.name, targets[t.name].stat().st_size, n_params)


def _requantize(src: Path, wanted: list[FileType], out: str | Path | None, outdir: str | Path | None,
                threads: int | None, force: bool, progress: bool, imatrix: ImatrixRequest | None,
                saved: Imatrix | None) -> list[Output]:  # fmt: skip
    info = check_input(src)
    stem = src.stem

    def name(type_name: str) -> str:
        return naming.gguf_file_name(info.metadata, stem, type_name)

    folder = Path(outdir).expanduser() if outdir else src.parent
    targets = _targets(wanted, out, folder, name)
    weighting = _Weighting(imatrix, saved, _imatrix_target(out, folder, name))
    for path in [*targets.values(), *weighting.new_files]:
        check_writable(path, force)
        if path.resolve() == src.resolve():
            raise OutputError(f"{path}: is the input file; choose another output name")
    outputs: dict[str, Output] = {}
    matrix = weighting.get(src, threads, force, progress)
    _quantize_all(src, info.parameters, wanted, targets, outputs, threads, force, progress, matrix)
    return [outputs[t.name] for t in wanted]


def _targets(wanted: list[FileType], out: str | Path | None, outdir: Path, name) -> dict[str, Path]:  # noqa: ANN001
    """Output path per type: ``-o`` (with ``{ftype}`` when several types), else the convention."""
    if out is None:
        return {t.name: outdir / name(t.name) for t in wanted}
    text = str(Path(out).expanduser())
    templated = "{" in text
    if len(wanted) > 1 and not templated:
        raise OutputError(f"-o {out}: several types need '{{ftype}}' in the name (or use --outdir)")
    return {t.name: Path(gguf.fill_templated_filename(text, t.name) if templated else text) for t in wanted}


def _check_space(conv: Conversion, targets: dict[str, Path], base: str, temp_base: bool) -> None:
    """Free space for every output plus the float intermediate, checked before starting."""
    need = 0
    for type_name in targets:
        need += int(conv.n_params * FILE_TYPES[type_name].bpw / 8)
    if temp_base:
        need += int(conv.n_params * FILE_TYPES[base].bpw / 8)
    need += 16 << 20  # header, vocabulary
    folder = next(iter(targets.values())).parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        gb = 1e9
        raise OutputError(
            f"{folder}: needs about {need / gb:.1f} GB free but has {free / gb:.1f} GB; free some space or use --outdir"
        )
