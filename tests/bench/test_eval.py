"""`edgellm eval`: llama-perplexity's PPL / KLD / same-top-p, checked against an independent
computation from llama-cpp-python's high-level Llama class (all logits) and numpy."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from edgellm.cli import main
from edgellm.errors import EdgeLLMError
from edgellm.measure.evaluate import EvalPlan, compare, load_text, perplexity, prepare_reference

N_CTX = 64
PLAN = EvalPlan(text_spec="bundled:en", n_ctx=N_CTX, max_chunks=3, threads=2)


def reference_log_probs(path: Path, chunks: list[list[int]]) -> np.ndarray:
    """Log-softmax (float64) at the scored positions, from llama-cpp-python's own Llama class
    (flash attention on: what llama.cpp's "auto" picks on a CPU, for edgellm and llama-perplexity)."""
    llm = llama_cpp.Llama(
        str(path), n_ctx=N_CTX, n_batch=N_CTX, logits_all=True, flash_attn=True, n_threads=2, verbose=False
    )
    rows = []
    for chunk in chunks:
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[N_CTX // 2 : N_CTX - 1], dtype=np.float64)
        high = logits.max(axis=1, keepdims=True)
        rows.append(logits - high - np.log(np.exp(logits - high).sum(axis=1, keepdims=True)))
    llm.close()
    return np.vstack(rows)


@pytest.mark.slow
def test_ppl_and_kld_match_a_direct_computation(default_model: Path, quantized: dict[str, Path]) -> None:
    with prepare_reference(PLAN, default_model) as ref:
        result = compare(PLAN, quantized["Q4_0"], ref)
        q8 = compare(PLAN, quantized["Q8_0"], ref)
        chunks = ref.chunks
    # Q8_0 keeps the Q4_1 weights almost exactly; Q4_0 (no offset per block) does not
    assert q8.kld.value < result.kld.value and q8.same_top.value > result.same_top.value
    targets = np.concatenate([c[N_CTX // 2 + 1 :] for c in chunks])
    base = reference_log_probs(default_model, chunks)
    model = reference_log_probs(quantized["Q4_0"], chunks)
    rows = np.arange(len(targets))
    ppl = np.exp(-model[rows, targets].mean())
    ppl_ref = np.exp(-base[rows, targets].mean())
    kld = (np.exp(base) * (base - model)).sum(axis=1).mean()
    same = (base.argmax(axis=1) == model.argmax(axis=1)).mean()
    assert result.positions == len(targets) == 3 * (N_CTX - 1 - N_CTX // 2)
    assert result.ppl.value == pytest.approx(ppl, rel=2e-3)
    assert result.ppl_ref.value == pytest.approx(ppl_ref, rel=2e-3)
    assert result.kld.value == pytest.approx(kld, rel=2e-2)
    assert abs(result.same_top.value - same) <= 1 / len(targets)
    assert result.delta_ppl_percent.value == pytest.approx(100 * (ppl / ppl_ref - 1), abs=0.5)


def test_perplexity_alone_and_chunking(default_model: Path) -> None:
    result = perplexity(EvalPlan(text_spec="bundled:zh", n_ctx=N_CTX, max_chunks=2, threads=2), default_model)
    assert (result.chunks, result.positions, result.kld) == (2, 2 * (N_CTX - 1 - N_CTX // 2), None)
    assert 1 < result.ppl.value < 49152


def test_a_model_against_itself_cli_json(default_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """KLD exactly 0, the same top token everywhere, and progress on stderr."""
    args = ["eval", str(default_model), "--ref", str(default_model), "--text", "bundled:en"]
    assert main([*args, "--ctx", str(N_CTX), "--chunks", "2", "--threads", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["chunks"] == 2 and data["n_ctx"] == N_CTX and data["positions"] == 2 * (N_CTX - 1 - N_CTX // 2)
    assert data["kld"]["value"] == 0 and data["kld_max"] == 0 and data["same_top"]["value"] == 1.0
    assert data["ppl"] == data["ppl_ref"] and data["ppl_ratio"]["value"] == 1.0
    assert data["kld_percentiles"] == dict.fromkeys(["99.9", "99", "95", "90", "50", "10", "5", "1", "0.1"], 0.0)
    assert "reference: chunk 2/2" in err and "tok/s" in err


def test_cli_table(default_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "default", "--text", "bundled:en", "--ctx", str(N_CTX), "--chunks", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].startswith("PPL ") and "2 chunks of 64 tokens" in out


def test_short_text_is_a_clear_error(default_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "short.txt"
    text.write_text("Only a few words.")
    assert main(["eval", str(default_model), "--text", str(text)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs at least 1024" in err and "--ctx" in err


@pytest.mark.parametrize("spec", ["bundled:fr", "/no/such/file.txt"])
def test_bad_text_names(spec: str) -> None:
    with pytest.raises(EdgeLLMError):
        load_text(spec)


def test_bundled_texts() -> None:
    name, text = load_text("bundled")
    assert "Four score and seven years ago" in text and "道可道，非常道" in text
    assert load_text("bundled:zh")[1].startswith("《道德经》")


def test_no_room_for_the_reference_is_a_clear_error(default_model: Path) -> None:
    """Checked before the memory-mapped file grows (a sparse file that cannot grow kills with
    SIGBUS): here the file size limit (RLIMIT_FSIZE, 8 MB) leaves no room, in the child process
    that scores the models as in the command's own."""

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))

    args = ["eval", str(default_model), "--ref", str(default_model), "--text", "bundled:en", "--ctx", "64"]
    done = subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True,
                          preexec_fn=small_files, timeout=600)  # fmt: skip
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr and "set TMPDIR" in err and "GB" in err
