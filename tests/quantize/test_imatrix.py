"""Issue #19: importance matrices computed inside edgellm, llama.cpp's file formats, quantization
weighted by them, and the types that need one.

How correctness is shown (item 4):
- The matrix: against an independent computation from captured activations: transformers
  runs the same checkpoint on the same token chunks and forward hooks on every nn.Linear sum its
  input's squares (float64); edgellm's collector must agree within 1e-4 relative per entry. And
  `test_equals_llama_imatrix` holds `edgellm imatrix` to llama-imatrix itself on the same model,
  text and chunking (llama.cpp's tools are built by the tests from the pinned sdist's sources,
  bench/llama_tools.py: minutes on a fresh machine, cached after).
- The quantization: byte-identical to `llama_model_quantize` called with the matrix loaded
  the way llama-quantize's `load_imatrix` loads it, transcribed here over gguf-py's reader (not
  edgellm's), with llama-quantize's `quantize.imatrix.*` overrides; and
  `test_byte_identical_to_llama_quantize` compares with the llama-quantize binary itself.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from bench import llama_tools
from edgellm.cli import main
from edgellm.runtime.chunks import chunk_tokens
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from quantize import FILE_TYPES, run
from quantize.imatrix import calibration, files
from quantize.imatrix import ggml_tensor as G
from quantize.imatrix.collect import Collector
from quantize.imatrix.compute import Plan, compute
from quantize.imatrix.request import ImatrixRequest
from quantize.llamacpp import quantize_file

from . import builders as B
from .reference import gguf_fields

NEW_TYPES = ["q2_k_s", "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "iq3_s", "iq3_m"]
HF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
            "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}  # fmt: skip
DATA = Path(__file__).resolve().parents[2] / "edgellm" / "data"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, spm_llama: bytes) -> tuple[Path, Path]:
    """A Llama checkpoint whose widths are multiples of 256 (so llama.cpp really uses the 1-3 bit
    types instead of falling back for short rows), with grouped-query attention; and its f32 GGUF."""
    folder = tmp_path_factory.mktemp("imatrix") / "Llama-2-tiny-hf"
    config = {**B.LLAMA2_CONFIG, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2}  # fmt: skip
    B.build(folder, config, spm_llama, dtype="float32")
    (f32,) = run(folder, "f32", outdir=folder.parent / "gguf", progress=False)
    return folder, f32.path


@pytest.fixture(scope="session")
def tiny_matrix(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgellm's matrix of the tiny model on the bundled English text, saved as GGUF."""
    name, text = calibration.load("bundled:en")
    matrix = compute(tiny[1], Plan(name, text, n_ctx=128, max_chunks=6, threads=2))
    return files.write(matrix, tmp_path_factory.mktemp("matrix") / "tiny.imatrix.gguf")


def _error_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("imatrix: chunk")]
    assert len(lines) == 1 and lines[0].startswith("edgellm: error: ") and "Traceback" not in err, err
    return lines[0]


# -- the ggml_tensor mirror ------------------------------------------------------------------------


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def test_tensor_mirror_reads_a_tensor_ggml_made() -> None:
    """A tensor made by ggml itself, read through the ctypes mirror: sizes, strides, name, data."""
    G.check_layout()
    lib = G.libggml()
    lib.ggml_init.restype, lib.ggml_init.argtypes = ctypes.c_void_p, [_InitParams]
    lib.ggml_new_tensor_3d.restype = ctypes.c_void_p
    lib.ggml_new_tensor_3d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    lib.ggml_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_set_name.restype = ctypes.c_void_p
    lib.ggml_nbytes.restype, lib.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    ctx = lib.ggml_init(_InitParams(1 << 20, None, False))
    try:
        t = lib.ggml_new_tensor_3d(ctx, G.GGML_TYPE_F32, 5, 3, 2)
        lib.ggml_set_name(t, b"blk.7.ffn_up.weight")
        mirror = G.tensor_at(t)
        assert list(mirror.ne) == [5, 3, 2, 1] and list(mirror.nb) == [4, 20, 60, 120]
        assert G.name_of(mirror) == "blk.7.ffn_up.weight" and mirror.type == G.GGML_TYPE_F32 and G.op_at(t) == 0
        values = np.arange(30, dtype=np.float32)
        ctypes.memmove(mirror.data, values.ctypes.data, lib.ggml_nbytes(t))
        array = G.as_array(t, np.float32)
        assert array.shape == (1, 2, 3, 5)
        assert np.array_equal(array.reshape(-1), values)
    finally:
        lib.ggml_free(ctx)


# -- the matrix: against transformers --------------------------------------------------------------


def _hf_sums(folder: Path, chunks: list[list[int]]) -> dict[str, tuple[np.ndarray, int]]:
    """Sum of squared inputs per column of every projection, by forward hooks in transformers."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    sums: dict[str, list] = {}

    def hook(name: str):  # noqa: ANN202
        def add(_module: object, args: tuple) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            entry = sums.setdefault(name, [0.0, 0])
            entry[0] = entry[0] + (x * x).sum(0).numpy()
            entry[1] += x.shape[0]

        return add

    for i, layer in enumerate(model.model.layers):
        for module_name, module in layer.named_modules():
            short = module_name.rsplit(".", 1)[-1]
            if short in HF_NAMES:
                module.register_forward_pre_hook(hook(f"blk.{i}.{HF_NAMES[short]}.weight"))
    with torch.no_grad():
        for chunk in chunks:
            model(torch.tensor([chunk]))
    return {name: (s, n) for name, (s, n) in sums.items()}


def test_matrix_equals_an_independent_computation(tiny: tuple[Path, Path]) -> None:
    """The collector on llama.cpp's graph callback against transformers' forward hooks on the same
    token chunks (f32 weights and KV cache, no flash attention: the same arithmetic up to
    summation order): every entry within 1e-4 relative, every count exact."""
    folder, f32 = tiny
    _, text = calibration.load("bundled:en")
    collector = Collector()
    options = LoadOptions(n_ctx=64, n_batch=64, n_threads=2, kv_f32=True, flash_attn=False,
                          eval_callback=collector.callback)  # fmt: skip
    with Engine(f32, options) as engine:
        tokens = engine.tokenize(text, add_special=True, parse_special=False)
        chunks = chunk_tokens(tokens, 64, 4, engine.tokenize("", add_special=True)[0], what="text")
        for chunk in chunks:
            engine.reset()
            engine.logits(chunk)
            collector.check()
    reference = _hf_sums(folder, chunks)
    assert sorted(collector.entries) == sorted(reference)
    for name, (sums, count) in reference.items():
        got = collector.entries[name]
        assert got.counts.tolist() == [count], name
        relative = np.abs(got.sums[0] - sums) / sums
        assert relative.max() < 1e-4, (name, relative.max())


def test_chunks_are_llama_imatrix_chunks() -> None:
    """Consecutive n_ctx tokens, BOS first, the tail and anything past --chunks dropped."""
    tokens = list(range(100, 450))
    chunks = chunk_tokens(tokens, 100, None, 1, what="text")
    assert chunks == [[1, *range(101, 200)], [1, *range(201, 300)], [1, *range(301, 400)]]
    assert len(chunk_tokens(tokens, 100, 2, None, what="text")) == 2
    assert chunk_tokens(tokens, 100, None, None, what="text")[1] == list(range(200, 300))
    with pytest.raises(Exception, match="needs at least 400"):
        chunk_tokens(tokens[:399], 200, None, 1, what="the text")


def test_small_batches_and_other_ops_are_skipped(tiny: tuple[Path, Path]) -> None:
    """llama-imatrix's rule: a generation-sized batch (< 16 rows) adds nothing."""
    collector = Collector()
    with Engine(tiny[1], LoadOptions(n_ctx=64, n_threads=2, eval_callback=collector.callback)) as engine:
        engine.logits([1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18])  # 15 tokens
        assert collector.entries == {}
        engine.logits(list(range(20, 36)))  # 16 more
        collector.check()
    assert {e.counts[0] for e in collector.entries.values()} == {16}
    assert len(collector.entries) == 2 * 7  # 7 matrices per block; token_embd and output are not blk.*


# -- files -----------------------------------------------------------------------------------------


def test_gguf_file_is_llama_cpps_format(tiny_matrix: Path) -> None:
    """general.type imatrix, the imatrix.* keys, <name>.in_sum2 [cols, n_mat] and <name>.counts
    [1, n_mat] in F32, read back unchanged; no general.architecture (it is not a model)."""
    reader = gguf.GGUFReader(tiny_matrix)
    fields = gguf_fields(tiny_matrix)
    assert fields["general.type"] == "imatrix" and "general.architecture" not in fields
    assert fields["imatrix.datasets"] == ["bundled:en"]
    assert (fields["imatrix.chunk_count"], fields["imatrix.chunk_size"]) == (6, 128)
    names = [t.name for t in reader.tensors]
    assert names[:2] == ["blk.0.attn_k.weight.in_sum2", "blk.0.attn_k.weight.counts"] and len(names) == 28
    t = {t.name: t for t in reader.tensors}
    assert [int(d) for d in t["blk.1.ffn_down.weight.in_sum2"].shape] == [512, 1]
    assert t["blk.1.ffn_down.weight.counts"].data.tolist() == [[768.0]]
    matrix = files.read(tiny_matrix)
    assert matrix.entries["blk.1.ffn_down.weight"].sums.shape == (1, 512)
    assert (matrix.chunk_count, matrix.chunk_size, matrix.file) == (6, 128, tiny_matrix.name)


def test_legacy_dat_round_trip(tiny_matrix: Path, tmp_path: Path) -> None:
    """`.dat` is llama-imatrix's legacy layout (checked field by field here) and gives the same means."""
    matrix = files.read(tiny_matrix)
    dat = files.write(matrix, tmp_path / "m.dat")
    raw = dat.read_bytes()
    n, length = np.frombuffer(raw[:8], dtype="<i4")
    assert n == 14 and raw[8 : 8 + length] == b"blk.0.attn_k.weight"
    ncall, nval = np.frombuffer(raw[8 + length : 16 + length], dtype="<i4")
    assert (ncall, nval) == (6, 256)
    assert raw.endswith(b"bundled:en")
    back = files.read(dat)
    assert back.legacy and back.datasets == ["bundled:en"] and back.chunk_count == 6
    for name, mean in matrix.means().items():
        np.testing.assert_allclose(back.means()[name], mean, rtol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an importance matrix"),
        (b"\x07\x00\x00\x00 not a matrix", "not an importance matrix"),
        (b"GGUF\x03\x00\x00\x00", "corrupt or truncated GGUF header"),
    ],
)
def test_bad_matrix_files_are_one_line(tiny: tuple[Path, Path], tmp_path: Path, capsys, content, message) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.imatrix"
    bad.write_bytes(content)
    out = tmp_path / "out.gguf"
    line = _error_line(["quantize", str(tiny[1]), "-t", "q4_k_m", "--imatrix", str(bad), "-o", str(out)], capsys)
    assert message in line and str(bad) in line
    assert not out.exists()


def test_a_huge_file_is_refused_unread(tiny: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """A multi-GB file given as a legacy .dat (not GGUF): refused by its size, not read into memory."""
    huge = tmp_path / "model.safetensors"
    with open(huge, "wb") as fh:
        fh.truncate(files.MAX_LEGACY + 1)  # sparse: no disk used
    line = _error_line(["quantize", str(tiny[1]), "-t", "q4_k_m", "--imatrix", str(huge),
                        "-o", str(tmp_path / "o.gguf")], capsys)  # fmt: skip
    assert str(huge) in line and f"{files.MAX_LEGACY + 1:,} bytes" in line


def test_a_model_is_not_a_matrix(tiny: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    line = _error_line(["quantize", str(tiny[1]), "-t", "iq2_xs", "--imatrix", str(tiny[1]),
                        "-o", str(tmp_path / "o.gguf")], capsys)  # fmt: skip
    assert "not an importance matrix (general.type is 'model')" in line


def test_a_matrix_of_another_model_is_refused_before_quantizing(models, tiny_matrix, tmp_path, capsys) -> None:  # noqa: ANN001
    other = models("llama2-chat").gguf("f16")
    line = _error_line(["quantize", str(other), "-t", "q2_k", "--imatrix", str(tiny_matrix),
                        "-o", str(tmp_path / "o.gguf")], capsys)  # fmt: skip
    assert "made for another model" in line and "blk.0.attn_k.weight has 256 values" in line
    assert list(tmp_path.iterdir()) == []


# -- quantizing with it ----------------------------------------------------------------------------


def test_types_needing_a_matrix_are_exactly_those_llama_cpp_refuses(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """The table's needs_imatrix against llama.cpp's own refusal, every new type, no matrix given."""
    from edgellm.runtime import llama_log

    llama_log.install(verbose=False)
    for name in NEW_TYPES:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread = int(FILE_TYPES[name].ftype), 2
        refused = llama_cpp.llama_model_quantize(str(tiny[1]).encode(), str(tmp_path / name).encode(), params) != 0
        assert refused == FILE_TYPES[name].needs_imatrix, name


def test_a_type_needing_a_matrix_is_refused_up_front(tiny: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    line = _error_line(["quantize", str(tiny[1]), "-t", "q4_k_m,iq2_xs,iq1_m", "--outdir", str(tmp_path)], capsys)
    assert line == ("edgellm: error: iq2_xs, iq1_m need an importance matrix: add --imatrix (computed on bundled "
                    "calibration text) or --imatrix FILE")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    line = _error_line(["quantize", str(tiny[1]), "-t", "q4_k_m", "--chunks", "3"], capsys)
    assert "add --imatrix" in line


@pytest.mark.parametrize("type_name", NEW_TYPES)
def test_every_new_type_quantizes_and_generates(tiny, tiny_matrix, tmp_path, type_name) -> None:  # noqa: ANN001
    out = tmp_path / f"{type_name}.gguf"
    (result,) = run(tiny[1], type_name, out=out, progress=False, imatrix=ImatrixRequest(file=tiny_matrix))
    fields = gguf_fields(out)
    assert fields["general.file_type"] == FILE_TYPES[type_name].ftype
    assert fields["quantize.imatrix.file"] == tiny_matrix.name and fields["quantize.imatrix.entries_count"] == 14
    assert result.bits_per_weight < 8
    with Engine(out, LoadOptions(n_ctx=128, n_threads=2)) as engine:
        turn = engine.chat([{"role": "user", "content": "hello"}], SamplingParams(temperature=0, max_tokens=6))
        turn.result()
    assert turn.stats.generated_tokens > 0


def _llama_quantize_means(path: Path) -> dict[str, np.ndarray]:
    """llama-quantize's load_imatrix (tools/quantize/quantize.cpp), over gguf-py's reader: per
    matrix float32 sums / float32 counts, 1 where a count is 0."""
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    out = {}
    for name, t in tensors.items():
        if name.endswith(".in_sum2"):
            base = name.removesuffix(".in_sum2")
            counts = np.rint(np.asarray(tensors[base + ".counts"].data, dtype=np.float64).reshape(-1))
            sums = np.asarray(t.data, dtype=np.float32).reshape(len(counts), -1)
            c = counts.astype(np.float32)[:, None]
            out[base] = np.where(c > 0, sums / np.where(c > 0, c, 1), np.float32(1)).astype(np.float32).reshape(-1)
    return out


def _direct_quantize(src: Path, dst: Path, type_name: str, matrix: Path) -> None:
    """llama_model_quantize called as llama-quantize's main() calls it with --imatrix FILE."""
    means = _llama_quantize_means(matrix)
    fields = gguf_fields(matrix)
    data = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()
    for i, (name, values) in enumerate(means.items()):
        data[i].name = name.encode()
        data[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        data[i].size = values.size
    kv = (llama_cpp.llama_model_kv_override * 5)()
    items = [(b"quantize.imatrix.file", 3, matrix.name),
             (b"quantize.imatrix.dataset", 3, fields["imatrix.datasets"][0]),
             (b"quantize.imatrix.entries_count", 0, len(means)),
             (b"quantize.imatrix.chunks_count", 0, fields["imatrix.chunk_count"])]  # fmt: skip
    for i, (key, tag, value) in enumerate(items):
        kv[i].key, kv[i].tag = key, tag
        if tag == 3:
            kv[i].value.val_str = value.encode()
        else:
            kv[i].value.val_i64 = value
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = int(FILE_TYPES[type_name].ftype), 2
    params.imatrix, params.kv_overrides = data, kv
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) == 0


@pytest.mark.parametrize("type_name", ["iq2_xs", "q3_k_m"])
def test_quantization_is_byte_identical_to_llama_quantizes_call(tiny, tiny_matrix, tmp_path, type_name) -> None:  # noqa: ANN001
    mine = tmp_path / "mine.gguf"
    quantize_file(tiny[1], mine, FILE_TYPES[type_name], n_params=1, threads=2, progress=False,
                  imatrix=files.read(tiny_matrix))  # fmt: skip
    direct = tmp_path / "direct.gguf"
    _direct_quantize(tiny[1], direct, type_name, tiny_matrix)
    assert mine.read_bytes() == direct.read_bytes()
    plain = tmp_path / "plain.gguf"
    if not FILE_TYPES[type_name].needs_imatrix:  # and the matrix changes the weights (the control)
        quantize_file(tiny[1], plain, FILE_TYPES[type_name], n_params=1, threads=2, progress=False)
        assert plain.read_bytes() != mine.read_bytes()


def test_command_computes_saves_and_records_the_matrix(tiny: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """`edgellm quantize F32 -t TYPES --imatrix`: computed once on the float model, saved beside
    the outputs (named like them), recorded in each output as llama-quantize records it."""
    code = main(["quantize", str(tiny[1]), "-t", "iq2_xxs,q2_k", "--imatrix", "--calibration", "bundled:en",
                 "--chunks", "2", "--outdir", str(tmp_path)])  # fmt: skip
    assert code == 0
    saved = [p for p in tmp_path.iterdir() if p.name.endswith("-IMATRIX.gguf")]
    assert len(saved) == 1 and len(list(tmp_path.iterdir())) == 3
    matrix = files.read(saved[0])
    assert (matrix.chunk_count, matrix.chunk_size, matrix.datasets) == (2, 512, ["bundled:en"])
    for out in tmp_path.glob("*Q2_K.gguf"):
        fields = gguf_fields(out)
        assert fields["quantize.imatrix.file"] == saved[0].name
        assert fields["quantize.imatrix.dataset"] == "bundled:en"
        assert (fields["quantize.imatrix.entries_count"], fields["quantize.imatrix.chunks_count"]) == (14, 2)
    assert "chunk 2/2" in capsys.readouterr().err


def test_report_scores_each_type_with_and_without_the_matrix(tiny, tiny_matrix, tmp_path, capsys) -> None:  # noqa: ANN001
    """`--report --imatrix`: the table (and plot) hold each type without the matrix and with it."""
    assert main(["quantize", str(tiny[1]), "-t", "q2_k,iq2_xxs", "--imatrix", str(tiny_matrix), "--report",
                 "--outdir", str(tmp_path)]) == 0  # fmt: skip
    table = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert table[1:] == ["F32", "Q2_K", "Q2_K + imatrix", "IQ2_XXS + imatrix"]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".gguf", ".gguf", ".png"]  # scratch files gone


def test_a_checkpoint_folder_is_weighted_by_a_matrix_of_its_float_intermediate(models, tmp_path) -> None:  # noqa: ANN001
    """From a model folder: the matrix is computed on the f16 written for quantizing (then deleted),
    saved under the outputs' name with IMATRIX for the type."""
    out = run(models("llama2-chat").folder, "q4_k_m", outdir=tmp_path, progress=False,
              imatrix=ImatrixRequest(calibration="bundled:en", chunks=1))  # fmt: skip
    saved = out[0].path.name.replace("-Q4_K_M.gguf", "-IMATRIX.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([saved, out[0].path.name])
    matrix = files.read(tmp_path / saved)
    assert matrix.chunk_count == 1 and len(matrix.entries) == 2 * 7
    assert gguf_fields(out[0].path)["quantize.imatrix.file"] == saved


def test_imatrix_command_and_refusals(tiny: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    text = tmp_path / "calib.txt"
    text.write_text((DATA / "calibration_en.txt").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "m.dat"
    assert main(["imatrix", str(tiny[1]), "-o", str(out), "--calibration", str(text), "--ctx", "64",
                 "--chunks", "3"]) == 0  # fmt: skip
    assert files.read(out).datasets == ["calib.txt"] and files.read(out).chunk_count == 3
    assert "already exists" in _error_line(["imatrix", str(tiny[1]), "-o", str(out)], capsys)
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    line = _error_line(["imatrix", str(tiny[1]), "-o", str(tmp_path / "x.gguf"), "--calibration", str(short)], capsys)
    assert "short.txt has" in line and "needs at least 1024" in line and line.endswith("or a smaller --ctx")
    line = _error_line(["quantize", str(tiny[1]), "-t", "q4_k_m", "--imatrix", "--calibration", str(short),
                        "-o", str(tmp_path / "z.gguf")], capsys)  # fmt: skip
    assert "short.txt has" in line and line.endswith("give a longer --calibration text")  # quantize has no --ctx
    q = tmp_path / "q.gguf"
    assert main(["quantize", str(tiny[1]), "-t", "q8_0", "-o", str(q)]) == 0
    capsys.readouterr()
    line = _error_line(["imatrix", str(q), "-o", str(tmp_path / "y.gguf")], capsys)
    assert line.endswith("already quantized (Q8_0); compute the matrix on the f32/f16/bf16 model it was quantized from")


# -- calibration text ------------------------------------------------------------------------------


def test_calibration_text_shares_nothing_with_the_eval_texts() -> None:
    """No sentence (or 12 consecutive Chinese characters) of `edgellm eval`'s texts is calibrated on."""
    _, mixed = calibration.load()
    for name in ("eval_en.txt", "eval_zh.txt"):
        text = (DATA / name).read_text(encoding="utf-8")
        sentences = [s.strip() for s in text.replace("\n", " ").replace("。", ".").split(".") if len(s.strip()) > 12]
        assert not [s for s in sentences if s[:40] in mixed]
        hanzi = "".join(ch for ch in text if "\u4e00" <= ch <= "\u9fff")
        assert not [hanzi[i : i + 12] for i in range(len(hanzi) - 12) if hanzi[i : i + 12] in mixed]


def test_bundled_mix_keeps_its_proportions_in_any_prefix() -> None:
    _, mixed = calibration.load()
    head = mixed[: len(mixed) // 4]
    assert "How Bread Rises" in head and "面包是怎样发起来的" in head and '"""Text wrapping and filling.' in head
    assert set(calibration.load()[1].split("\n\n")) == set(calibration.load("bundled:code,zh,en")[1].split("\n\n"))
    with pytest.raises(Exception, match="no bundled calibration text 'fr'"):
        calibration.load("bundled:fr")


# -- llama.cpp's own tools, when built -------------------------------------------------------------


LLAMA_ROOT = llama_tools.default_root()  # resolved at import, before the fixtures isolate XDG_CACHE_HOME


@pytest.fixture(scope="session")
def llama_cpp_tools() -> dict[str, Path]:
    """llama.cpp's own llama-imatrix and llama-quantize, built from the pinned sdist's vendored
    sources with set-up's CPU flags (bench/llama_tools.py): minutes the first time, cached after."""
    return llama_tools.build(["llama-imatrix", "llama-quantize"], root=LLAMA_ROOT)


@pytest.mark.timeout(2400)  # the first of these builds llama.cpp's tools (minutes)
def test_equals_llama_imatrix(tiny: tuple[Path, Path], tmp_path: Path, llama_cpp_tools: dict[str, Path]) -> None:
    """`edgellm imatrix` and llama-imatrix on the same model, text file and chunking: every entry
    within 1e-4 relative, the same counts, chunk count and size."""
    tool = llama_cpp_tools["llama-imatrix"]
    text = tmp_path / "calib.txt"
    text.write_text((DATA / "calibration_en.txt").read_text(encoding="utf-8"), encoding="utf-8")
    theirs = tmp_path / "theirs.gguf"
    subprocess.run([str(tool), "-m", str(tiny[1]), "-f", str(text), "-o", str(theirs), "-c", "128", "-b", "128",
                    "--chunks", "5", "-t", "2", "--no-ppl"], check=True, capture_output=True)  # fmt: skip
    assert main(["imatrix", str(tiny[1]), "-o", str(tmp_path / "mine.gguf"), "--calibration", str(text),
                 "--ctx", "128", "--chunks", "5", "--threads", "2"]) == 0  # fmt: skip
    mine, ref = files.read(tmp_path / "mine.gguf"), files.read(theirs)
    assert (mine.chunk_count, mine.chunk_size) == (ref.chunk_count, ref.chunk_size) == (5, 128)
    assert sorted(mine.entries) == sorted(ref.entries)
    for name, e in ref.entries.items():
        assert mine.entries[name].counts.tolist() == e.counts.tolist()
        np.testing.assert_allclose(mine.entries[name].sums, e.sums, rtol=1e-4, err_msg=name)


@pytest.mark.timeout(2400)  # the first of these builds llama.cpp's tools (minutes)
def test_byte_identical_to_llama_quantize(
    tiny: tuple[Path, Path], tiny_matrix: Path, tmp_path: Path, llama_cpp_tools: dict[str, Path]
) -> None:
    """The llama-quantize binary fed the same file (run from its folder, so that it records the
    same bare file name edgellm records) writes the same bytes as `edgellm quantize --imatrix`."""
    tool = llama_cpp_tools["llama-quantize"]
    shutil.copy(tiny_matrix, tmp_path / tiny_matrix.name)
    for type_name in ("iq2_xs", "q2_k", "iq3_m"):
        theirs = tmp_path / f"theirs-{type_name}.gguf"
        subprocess.run([str(tool), "--imatrix", tiny_matrix.name, str(tiny[1]), str(theirs), type_name.upper(), "2"],
                       check=True, capture_output=True, cwd=tmp_path, env={**os.environ, "LC_ALL": "C"})  # fmt: skip
        mine = tmp_path / f"mine-{type_name}.gguf"
        assert main(["quantize", str(tiny[1]), "-t", type_name, "-o", str(mine), "--threads", "2",
                     "--imatrix", str(tmp_path / tiny_matrix.name)]) == 0  # fmt: skip
        assert mine.read_bytes() == theirs.read_bytes(), type_name


@pytest.mark.timeout(2400)  # the first of these builds llama.cpp's tools (minutes)
def test_reads_llama_imatrix_files(tiny: tuple[Path, Path], tmp_path: Path, llama_cpp_tools: dict[str, Path]) -> None:
    """Both of llama-imatrix's formats read back to the same means (its .dat rounds means x ncall)."""
    tool = llama_cpp_tools["llama-imatrix"]
    text = tmp_path / "calib.txt"
    text.write_text((DATA / "calibration_en.txt").read_text(encoding="utf-8"), encoding="utf-8")
    for out, fmt in (("a.gguf", "gguf"), ("a.dat", "dat")):
        subprocess.run([str(tool), "-m", str(tiny[1]), "-f", str(text), "-o", str(tmp_path / out), "-c", "128",
                        "-b", "128", "--chunks", "3", "-t", "2", "--no-ppl", "--output-format", fmt],
                       check=True, capture_output=True)  # fmt: skip
    a, b = files.read(tmp_path / "a.gguf"), files.read(tmp_path / "a.dat")
    assert b.legacy and b.datasets == [str(text)]
    for name, mean in a.means().items():
        np.testing.assert_allclose(b.means()[name], mean, rtol=1e-5)


def test_mixture_of_experts_entries_are_per_expert() -> None:
    """A MUL_MAT_ID node built by ggml itself (3 experts, 2 used per token, 5 tokens), handed to the
    collector as the scheduler hands it (ask, then collect): per expert the squares of the rows
    routed to it and their number, as llama-imatrix sums them (no MoE model is in the seed)."""
    lib = G.libggml()
    lib.ggml_init.restype, lib.ggml_init.argtypes = ctypes.c_void_p, [_InitParams]
    lib.ggml_new_tensor_3d.restype = ctypes.c_void_p
    lib.ggml_new_tensor_3d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    lib.ggml_new_tensor_2d.restype = ctypes.c_void_p
    lib.ggml_new_tensor_2d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    lib.ggml_mul_mat_id.restype = ctypes.c_void_p
    lib.ggml_mul_mat_id.argtypes = [ctypes.c_void_p] * 4
    lib.ggml_set_name.argtypes, lib.ggml_set_name.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 8)).astype(np.float32)  # [tokens, used, cols]
    ids = np.array([[0, 2], [2, 1], [0, 1], [2, 0], [2, 2]], dtype=np.int32)  # [tokens, used]
    ctx = lib.ggml_init(_InitParams(1 << 20, None, False))
    try:
        experts = lib.ggml_new_tensor_3d(ctx, G.GGML_TYPE_F32, 8, 4, 3)
        lib.ggml_set_name(experts, b"blk.0.ffn_up_exps.weight")
        acts = lib.ggml_new_tensor_3d(ctx, G.GGML_TYPE_F32, 8, 2, 5)
        route = lib.ggml_new_tensor_2d(ctx, G.GGML_TYPE_I32, 2, 5)
        ctypes.memmove(G.tensor_at(acts).data, x.ctypes.data, x.nbytes)
        ctypes.memmove(G.tensor_at(route).data, ids.ctypes.data, ids.nbytes)
        node = lib.ggml_mul_mat_id(ctx, experts, acts, route)
        assert G.op_at(node) == G.GGML_OP_MUL_MAT_ID
        collector = Collector()
        assert collector._on_node(node, True, 0) and collector._on_node(node, False, 0)
        collector.check()
    finally:
        lib.ggml_free(ctx)
    want_sums, want_counts = np.zeros((3, 8)), np.zeros(3, dtype=np.int64)
    for token in range(5):
        for slot in range(2):
            want_sums[ids[token, slot]] += x[token, slot].astype(np.float64) ** 2
            want_counts[ids[token, slot]] += 1
    got = collector.entries["blk.0.ffn_up_exps.weight"]
    assert got.counts.tolist() == want_counts.tolist() == [3, 2, 5]
    np.testing.assert_allclose(got.sums, want_sums, rtol=1e-6)
