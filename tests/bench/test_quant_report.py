"""The quantization report (table + size-vs-KLD PNG) and the PNG writer behind it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgellm.cli import main
from edgellm.measure import plot, quant_report
from edgellm.measure.evaluate import EvalPlan, prepare_reference
from edgellm.measure.quant_report import build_report, table, write_plot


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB PNG, checking every chunk's CRC (enough for what plot.py writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + width * 3)
    assert not rows[:, 0].any()  # filter type 0
    return rows[:, 1:].reshape(height, width, 3)


def test_report_rows_table_and_plot(default_model: Path, quantized: dict[str, Path], tmp_path: Path) -> None:
    plan = EvalPlan(text_spec="bundled:en", n_ctx=64, max_chunks=2, threads=2)
    rows = build_report(default_model, [quantized["Q4_0"]], plan, n_gen=8, reps=1)
    assert [r.info.file_type for r in rows] == ["Q4_1", "Q4_0"]
    assert rows[0].result.kld.value == 0 and rows[0].result.same_top.value == 1
    assert rows[1].result.kld.value > 0 and rows[1].result.delta_ppl_percent is not None
    assert all(r.generation.avg_ts > 0 and len(r.generation.samples_s) == 1 for r in rows)
    assert all(r.result.ppl_ref.value == rows[0].result.ppl.value for r in rows)
    lines = table(rows).splitlines()
    assert len(lines) == 4 and lines[0].split("|")[1].strip() == "type" and "ΔPPL %" in lines[0]
    png = tmp_path / "report.png"
    write_plot(rows, png)
    image = read_png(png)
    assert image.shape == (600, 900, 3)
    assert (image == plot._PALETTE[0]).all(axis=2).sum() > 50  # the Q4_0 marker


def test_scatter_places_points_on_a_log_axis(tmp_path: Path) -> None:
    """Bigger KLD is higher up; bigger files further right; y <= 0 cannot be drawn on a log axis."""
    points = [plot.Point(100, 0.001, "A"), plot.Point(300, 0.1, "B"), plot.Point(200, 0.0, "ZERO")]
    path = tmp_path / "p.png"
    plot.scatter(points, path, "T", "X", "Y")
    image = read_png(path)
    centres = []
    for color in plot._PALETTE[:2]:
        ys, xs = np.nonzero((image == color).all(axis=2))
        centres.append((np.median(xs), np.median(ys)))
    (ax, ay), (bx, by) = centres
    assert bx > ax and by < ay
    assert not (image == plot._PALETTE[2]).all(axis=2).any()
    assert not list(tmp_path.glob(".*tmp"))


def test_text_mask_and_ticks() -> None:
    assert plot.text_mask("Q4_K_M").shape == (14, 2 * (6 * 5 + 5))
    assert (plot.text_mask("é") == plot.text_mask("?")).all()
    for lo, hi in ((93.8, 270.0), (0.3, 0.31), (1000.0, 14000.0)):
        ticks = plot.nice_ticks(lo, hi)
        steps = np.diff(ticks)
        mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 9
        assert np.allclose(steps, steps[0]) and any(np.isclose(mantissa, m) for m in (1, 2, 5))
    assert [plot.format_tick(v) for v in (0.001, 0.1, 1.0, 250.0, 1e-5)] == ["0.001", "0.1", "1", "250", "1E-5"]


@pytest.fixture
def quick_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant_report, "REPORT_PLAN", EvalPlan(text_spec="bundled:en", n_ctx=64, max_chunks=2))
    monkeypatch.setattr(quant_report, "GEN_TOKENS", 8)
    monkeypatch.setattr(quant_report, "GEN_REPS", 1)


@pytest.mark.slow
@pytest.mark.usefixtures("quick_report")
def test_quantize_report_from_a_float_gguf(f16_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["quantize", str(f16_model), "--type", "q8_0", "--outdir", str(tmp_path), "--report"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["F16", "Q8_0"]
    png = tmp_path / f"{f16_model.stem}-quant-report.png"
    assert f"plot: {png}" in out and read_png(png).shape == (600, 900, 3)
    assert "reference: chunk 2/2" in err
    assert main(args) == 1  # the plot (and the outputs) exist: nothing is overwritten without --force
    assert "--force" in capsys.readouterr().err


@pytest.mark.usefixtures("quick_report")
def test_report_needs_a_float_source(default_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(default_model), "--type", "q8_0", "--outdir", str(tmp_path), "--report"]) == 1
    assert "give an f16/bf16/f32 GGUF as SRC" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.usefixtures("quick_report")
def test_quantize_report_from_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No float type asked for: the f16 reference is made in a scratch folder and removed afterwards.
    This tiny Llama adds BOS, so every chunk starts with it (SmolLM2 does not)."""
    from tests.quantize import builders

    folder = builders.build(tmp_path / "Llama-2-tiny-hf", builders.LLAMA2_CONFIG, builders.train_spm())
    before = set(folder.iterdir())
    assert main(["quantize", str(folder), "--type", "q8_0,q4_0", "--report"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("|")][2:]
    assert rows == ["F16", "Q8_0", "Q4_0"]
    made = set(folder.iterdir()) - before
    assert sorted(p.suffix for p in made) == [".gguf", ".gguf", ".png"]  # no f16, no scratch folder left
    q8 = next(p for p in made if p.name.endswith("Q8_0.gguf"))
    with prepare_reference(quant_report.REPORT_PLAN, q8) as ref:
        assert ref.tokens[0] == 1 and ref.tokens[64] != 1 and all(chunk[0] == 1 for chunk in ref.chunks)
