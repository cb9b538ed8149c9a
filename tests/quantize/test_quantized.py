"""Issue #3 points 1, 3, 5, 6: the `edgellm quantize` command and llama.cpp's quantizer: every
listed type, several types from one intermediate, outputs that load and generate, and
quantization that is exactly llama.cpp's own (byte-identical to calling it directly)."""

from __future__ import annotations

import gguf
import llama_cpp
import pytest

from edgellm.cli import main
from edgellm.runtime.engine import Engine, LoadOptions, SamplingParams
from quantize import FILE_TYPES, quantize, run

from .builders import MULTILINGUAL
from .reference import gguf_fields, gguf_logits, gguf_tokenize, nmse


def test_command_writes_each_type_and_prints_size_and_bits_per_weight(models, tmp_path, capsys) -> None:  # noqa: ANN001
    model = models("llama2-chat")
    outdir = tmp_path / "out"
    assert main(["quantize", str(model.folder), "--type", "Q8_0,q4_k_m", "--outdir", str(outdir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    files = sorted(outdir.iterdir())
    assert [p.name for p in files] == sorted(p.name for p in files if not p.name.startswith("."))  # no leftovers
    for line, suffix in zip(lines, ("-Q8_0.gguf", "-Q4_K_M.gguf"), strict=True):
        path, size, unit, bpw, *rest = line.split()
        assert path.endswith(suffix)
        assert rest == ["bits", "per", "weight"]
        assert {p.name for p in files} >= {path.rsplit("/", 1)[1]}
        assert unit in ("KB", "MB")
        assert 3.0 < float(bpw) < 12.0


def test_default_type_is_q4_k_m_and_written_beside_the_model(models, tmp_path, capsys) -> None:  # noqa: ANN001
    import shutil

    folder = tmp_path / "Llama-2-7b-hf"
    shutil.copytree(models("llama2-70b").folder, folder)
    assert main(["quantize", str(folder)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    out = folder / line.split()[0].rsplit("/", 1)[1]
    assert out.name.endswith("-Q4_K_M.gguf") and out.is_file()
    assert gguf_fields(out)["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("type_name", ["q8_0", "q4_k_m"])
def test_quantized_outputs_load_and_generate(models, tmp_path, type_name: str) -> None:  # noqa: ANN001
    model = models("llama2-chat")
    (out,) = run(model.folder, type_name, outdir=tmp_path, progress=False)
    ids = gguf_tokenize(out.path, MULTILINGUAL)
    # close to the exact f32 conversion: the quantizer saw the right tensors in the right layout
    error = nmse(gguf_logits(out.path, ids), gguf_logits(model.gguf("f32"), ids))
    assert error < (1e-3 if type_name == "q8_0" else 5e-2)
    with Engine(out.path, LoadOptions(n_ctx=256, n_threads=2)) as engine:
        turn = engine.chat([{"role": "user", "content": "你好"}], SamplingParams(temperature=0, max_tokens=6))
        turn.result()
    assert turn.stats.prompt_tokens > 5
    assert turn.stats.generated_tokens == 6 or turn.stats.stop_reason == "stop"


def test_every_listed_type_quantizes(models, tmp_path) -> None:  # noqa: ANN001
    f16 = models("llama2-chat").gguf("f16")
    for name, ftype in FILE_TYPES.items():
        if ftype.needs_imatrix:  # refused without an importance matrix: tests/quantize/test_imatrix.py
            continue
        out = quantize(f16, name, tmp_path / f"{name}.gguf", progress=False)
        assert gguf_fields(out.path)["general.file_type"] == ftype.ftype, name
        assert out.size > 0 and out.bits_per_weight > 2


def test_several_types_reuse_the_requested_float_file(models, tmp_path) -> None:  # noqa: ANN001
    """`--type f16,q8_0`: q8_0 is quantized from that f16 file, byte for byte what llama.cpp's
    quantizer makes of it when called directly (no extra passes, nothing of ours in between)."""
    f16, q8 = run(models("llama2-chat").folder, "f16,q8_0", outdir=tmp_path / "out", progress=False)
    direct = tmp_path / "direct.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(gguf.LlamaFileType.MOSTLY_Q8_0)
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(f16.path).encode(), str(direct).encode(), params) == 0
    assert q8.path.read_bytes() == direct.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([f16.path.name, q8.path.name])


def test_output_template_for_several_types(models, tmp_path) -> None:  # noqa: ANN001
    outs = run(models("llama2-chat").folder, "q4_0,q5_0", out=tmp_path / "m-{ftype}.gguf", progress=False)
    assert [o.path.name for o in outs] == ["m-q4_0.gguf", "m-q5_0.gguf"]


def test_requantizing_a_quantized_file_is_refused(models, tmp_path, capsys) -> None:  # noqa: ANN001
    (q8,) = run(models("llama2-chat").folder, "q8_0", outdir=tmp_path, progress=False)
    assert main(["quantize", str(q8.path), "--type", "q4_0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "already quantized (Q8_0)" in err and len(err.splitlines()) == 1
