"""The quantization report (table + size-vs-KLD PNG) and the PNG writer behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgellm.cli import main
from edgellm.measure import plot, quant_report
from edgellm.measure.evaluate import EvalPlan, prepare_reference
from edgellm.measure.quant_report import build_report, table, write_plot


def read_png(path: Path) -> np.ndarray:
    """Decode the PNG with Pillow (matplotlib's own image library), which checks its chunks."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


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
    assert image.shape == (600, 900, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 16  # drawn, not blank
    assert not list(tmp_path.glob(".*tmp"))


def test_scatter_shows_each_point_labelled_on_a_log_axis() -> None:
    """Each point where its numbers say, with its label; y <= 0 cannot be drawn on a log axis."""
    points = [plot.Point(100, 0.001, "Q8_0"), plot.Point(300, 0.1, "Q4_K_M"), plot.Point(200, 0.0, "F16")]
    fig = plot.figure(points, "title", "file size (MB)", "mean KLD")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "title" and ax.get_ylabel() == "mean KLD (log scale)"
    assert [c.get_offsets().tolist() for c in ax.collections] == [[[100, 0.001]], [[300, 0.1]]]
    assert [(t.get_text(), t.xy) for t in ax.texts] == [("Q8_0", (100, 0.001)), ("Q4_K_M", (300, 0.1))]
    colors = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(colors) == 2
    ymin, ymax = ax.get_ylim()
    assert ymin < 0.001 and ymax > 0.1


def test_linear_axis_keeps_zero_and_the_file_is_a_png(tmp_path: Path) -> None:
    points = [plot.Point(1, 0.0, "A"), plot.Point(2, 1.0, "B")]
    assert plot.figure(points, "t", "x", "y", log_y=False).axes[0].get_yscale() == "linear"
    assert len(plot.figure(points, "t", "x", "y", log_y=False).axes[0].collections) == 2
    path = tmp_path / "p.png"
    plot.scatter(points, path, "t", "x", "y", log_y=False)
    assert read_png(path).shape == (plot.DPI * plot.SIZE_INCHES[1], plot.DPI * plot.SIZE_INCHES[0], 3)
    assert not list(tmp_path.glob(".*tmp"))


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
