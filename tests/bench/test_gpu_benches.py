"""The GPU benchmarks' own logic, on the CPU (CI has no GPU): the worker process, the yardsticks,
the verdicts, and the line `run --verbose` prints that bench_gpu_auto reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import bench_gpu_auto, bench_gpu_precision
from bench.bench_gpu_precision import Run, compare, nmse, plan, run_in_process
from edgellm.runtime.engine import Engine, LoadOptions
from edgellm.runtime.planner import GpuFit

RESULTS = Path(bench_gpu_precision.__file__).with_name("results_gpu_precision_h200.json")


def test_worker_process_returns_the_engines_logits(default_model: Path, tmp_path: Path) -> None:
    tokens = [1, 504, 3458, 282, 4649, 314, 2]
    np.save(tmp_path / "tokens.npy", np.array(tokens))
    got = run_in_process(default_model, Run("Q4_1", "cpu", "exact", batch=1), 30, tmp_path / "tokens.npy",
                         tmp_path / "out.npy")
    opts = LoadOptions(n_ctx=2048, kv_f32=True, flash_attn=False, n_batch=1, probe=False)
    with Engine(default_model, opts) as engine:
        want = engine.logits(tokens)
    assert got.shape == (len(tokens), want.shape[1])
    assert np.array_equal(got, want)


def test_plan_measures_own_precisions_fully_and_extra_types_exactly() -> None:
    runs = plan(["F32", "F16", "Q4_1"], ["Q8_0"])
    assert len(runs) == len(set(runs)) == 3 * 9 + 5
    extra = [r for r in runs if r.precision == "Q8_0"]
    assert {r.mode for r in extra} == {"exact"} and not any(r.layers == "half" for r in extra)
    strict = [r for r in runs if r.strict]
    assert len(strict) == 4 and all(r.env == bench_gpu_precision.STRICT_F32 for r in strict)


def test_yardsticks_and_verdicts() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(8, 50)).astype(np.float32)

    def moved(scale: float) -> np.ndarray:
        return truth + scale * rng.normal(size=truth.shape).astype(np.float32)

    logits = {
        Run("F32", "cpu", "exact"): truth,
        Run("F32", "cpu", "default"): moved(1e-3),
        Run("F16", "cpu", "exact"): moved(1e-2),  # the larger f16 move: the tolerance
        Run("F32", "cpu", "exact", batch=1): moved(1e-6),
        Run("F32", "all", "exact"): moved(3e-3),  # within
        Run("F32", "all", "default"): moved(1e-1),  # beyond
    }
    result = compare(logits, "F32")
    assert result["tolerance"] == nmse(logits[Run("F16", "cpu", "exact")], truth)
    assert result["spread"] == {"F32": nmse(logits[Run("F32", "cpu", "exact", batch=1)], truth)}
    rows = {r["run"]: r for r in result["rows"]}
    assert rows["F32, GPU, all layers, exact"]["within_f16"] is True
    assert rows["F32, GPU, all layers, default"]["within_f16"] is False
    assert "nmse_cpu" not in rows["F32, CPU, exact"]  # a reference


def test_rendered_summary_divides_gpu_error_by_the_cpus() -> None:
    results = json.loads(RESULTS.read_text())
    text = bench_gpu_precision.render(results)
    model = results["models"][0]
    rows = {(r["precision"], r["layers"], r["mode"], r["strict"], r["batch"]): r for r in model["rows"]}
    gpu, cpu = rows[("Q4_1", "all", "exact", False, 512)], rows[("Q4_1", "cpu", "exact", False, 512)]
    assert f"| Q4_1 | {gpu['nmse_cpu']:.2e} |" in text
    assert f"| {gpu['nmse_truth'] / cpu['nmse_truth']:.1f}x |" in text
    assert text.count("\n| ") >= len(model["rows"]) + len(model["spread"])


@pytest.mark.parametrize("layers", [15, -1])
def test_auto_bench_reads_what_run_verbose_prints(layers: int) -> None:
    fit = GpuFit(layers, 30, 187 << 20, 14_495 << 20, 1 << 30)
    found = bench_gpu_auto.CHOSE.search(f"edgellm: {fit.describe()}\n")
    assert found is not None
    assert (int(found.group(1)), int(found.group(2))) == (30 if layers < 0 else layers, 30)
    sizes = bench_gpu_auto.size_bytes(found.group(3)), bench_gpu_auto.size_bytes(found.group(4))
    assert sizes == pytest.approx((187 << 20, 14_495 << 20), rel=1e-3)
