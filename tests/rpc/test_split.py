"""Layers on real workers: the same greedy text as the local CPU, and really on the workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.rpc.conftest import run_cli

MIB = 1 << 20
PROMPT = "Write a short story about a robot who learns to paint."
# flash attention off on both sides: with `auto` llama.cpp resolves it per device set, and the texts part
GREEDY = ["--temperature", "0", "--max-tokens", "96", "--flash-attn", "off", "--ctx", "1024", "--threads", "1"]


def model_buffers(log: str) -> dict[str, float]:
    """llama.cpp's `load_tensors: NAME model buffer size = X MiB` lines, in bytes."""
    found = re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", log)
    return {name: float(mib) * MIB for name, mib in found}


def assigned_layers(log: str) -> dict[int, str]:
    """`load_tensors: layer N assigned to device DEV` (debug lines, shown with --verbose)."""
    return {int(n): dev for n, dev in re.findall(r"layer\s+(\d+) assigned to device (\w+)", log)}


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize(("n_workers", "layers"), [(1, "all"), (2, "auto")], ids=["one-worker-all", "two-workers-auto"])
def test_greedy_text_through_workers_is_the_local_text(default_model: Path, start_worker, n_workers: int,
                                                       layers: str) -> None:  # fmt: skip
    local = run_cli("run", str(default_model), PROMPT, *GREEDY)
    assert local.returncode == 0, local.stderr
    workers = [start_worker() for _ in range(n_workers)]
    before = [vm_rss(w.pid) for w in workers]
    rpc = ",".join(w.endpoint for w in workers)
    # --log: llama.cpp's log (buffers, layer assignment); --verbose alone is edgellm's statistics
    split = run_cli("run", str(default_model), PROMPT, *GREEDY, "--rpc", rpc, "--gpu-layers", layers, "--verbose",
                    "--log")  # fmt: skip
    assert split.returncode == 0, split.stderr[-3000:]
    assert len(local.stdout) > 200 and split.stdout == local.stdout
    buffers = model_buffers(split.stderr)
    for w, rss in zip(workers, before, strict=True):
        on_worker = buffers[f"RPC0[{w.endpoint}]"]
        assert on_worker > 15 * MIB
        assert w.peak_rss() - rss >= on_worker  # the weights sit in the worker's own memory
    if layers == "all":  # only the token embeddings stay here
        assert buffers["CPU_Mapped"] < 0.35 * default_model.stat().st_size


def test_placement_shown_is_llamas(default_model: Path, start_worker) -> None:
    """`show --rpc ... --gpu-layers auto` predicts who holds which layer and its weight bytes as
    llama.cpp then places them."""
    workers = [start_worker(), start_worker()]
    rpc = ",".join(w.endpoint for w in workers)
    shown = run_cli("show", str(default_model), "--rpc", rpc, "--gpu-layers", "auto", "--json")
    assert shown.returncode == 0, shown.stderr
    placement = json.loads(shown.stdout)["placement"]
    assert [h["holder"] for h in placement] == ["here", *(w.endpoint for w in workers)]
    assert all(h["layers"] for h in placement)  # free memory is alike: every holder gets a share
    loaded = run_cli("run", str(default_model), "hi", "--rpc", rpc, "--max-tokens", "1", "--verbose", "--log")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    devices = {"CPU": "here", "RPC0": workers[0].endpoint, "RPC1": workers[1].endpoint}
    where = {il: devices[dev] for il, dev in assigned_layers(loaded.stderr).items()}
    n_layers = len(where) - 1  # the last index is the output head
    for h in placement:
        assert [il for il in range(n_layers) if where[il] == h["holder"]] == h["layers"]
        assert (where[n_layers] == h["holder"]) == h["output"]
    buffers = model_buffers(loaded.stderr)
    for h, w in zip(placement[1:], workers, strict=True):
        assert buffers[f"RPC0[{w.endpoint}]"] == pytest.approx(h["weights"], rel=0.01)


def test_converted_model_split_matches_local(converted_model: Path, start_worker) -> None:
    """A model made by edgellm's converter, over here and two workers."""
    local = run_cli("run", str(converted_model), PROMPT, *GREEDY)
    assert local.returncode == 0, local.stderr
    rpc = ",".join(w.endpoint for w in (start_worker(), start_worker()))
    split = run_cli("run", str(converted_model), PROMPT, *GREEDY, "--rpc", rpc, "--verbose", "--log")
    assert split.returncode == 0, split.stderr[-3000:]
    assert local.stdout.strip() and split.stdout == local.stdout
    assert sum(name.startswith("RPC0[") for name in model_buffers(split.stderr)) == 2
