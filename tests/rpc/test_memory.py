"""A model larger than a per-process memory limit runs when split, each worker holding its share."""

from __future__ import annotations

import json
from pathlib import Path

from tests.rpc.conftest import run_cli

MIB = 1 << 20


def test_model_over_the_limit_runs_split(many_layers_model: Path, start_worker, capsys) -> None:
    size = many_layers_model.stat().st_size
    budget = int(0.7 * size)  # every process: at most 70% of the model in private memory
    args = ["run", str(many_layers_model), "hi", "--no-mmap", "--max-tokens", "8", "--temperature", "0",
            "--ctx", "256", "--threads", "1"]  # fmt: skip
    alone = run_cli(*args, budget=budget)
    assert alone.returncode == 1 and "Traceback" not in alone.stderr, alone.stderr[-2000:]
    workers = [start_worker(budget=budget), start_worker(budget=budget)]
    rpc = ",".join(w.endpoint for w in workers)
    baseline = [w.peak_rss() for w in workers]
    shown = run_cli("show", str(many_layers_model), "--rpc", rpc, "--json")
    shares = {h["holder"]: h for h in json.loads(shown.stdout)["placement"]}
    split = run_cli(*args, "--rpc", rpc, budget=budget)
    assert split.returncode == 0, split.stderr[-2000:]
    for w, before in zip(workers, baseline, strict=True):
        share = shares[w.endpoint]
        held = share["weights"]  # (show plans the default context; this run's KV cache is smaller)
        grown = w.peak_rss() - before
        with capsys.disabled():
            print(f"\n{w.endpoint}: layers {share['layers']}, share {held / MIB:.0f} MiB of weights "
                  f"(+ KV and compute {(share['kv_cache'] + share['compute']) / MIB:.0f} MiB at most), "
                  f"peak RSS grew {grown / MIB:.0f} MiB; "
                  f"budget {budget / MIB:.0f} MiB")
        assert held < budget < size
        assert held <= grown <= held + share["kv_cache"] + share["compute"] + 64 * MIB  # its share, not the model
