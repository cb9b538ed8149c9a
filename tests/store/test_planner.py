"""The planner's decisions: what fits, what is refused (with the numbers and what to change),
and how many layers `--gpu-layers auto` offloads. A GPU cannot run here: machines are described
(the Machine a probe would return), and nvidia-smi's output is parsed as the tool prints it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.errors import EdgeLLMError
from edgellm.models import registry
from edgellm.runtime import hardware, planner
from edgellm.runtime.hardware import Gpu, Machine
from edgellm.units import human_bytes

GIB = 1 << 30


def laptop(ram_gib: float, vram_gib: float | None = None) -> Machine:
    gpus = (Gpu("NVIDIA GeForce RTX 4060 Laptop GPU", 8 * GIB, int(vram_gib * GIB)),) if vram_gib is not None else ()
    return Machine(32 * GIB, int(ram_gib * GIB), gpu_offload=vram_gib is not None, gpus=gpus)


@pytest.fixture(scope="module")
def reg() -> registry.Registry:
    return registry.load([registry.BUNDLED])


def test_kv_cache_formula(reg: registry.Registry) -> None:
    e = reg.lookup("llama-2-70b")
    est = planner.for_entry(e, "Q4_K_M", 4096)
    s = e.shape
    assert est.kv_cache == 2 * s.layers * s.kv_heads * (s.embedding // s.heads) * 4096 * 2  # GQA: 8 KV heads
    assert planner.for_entry(e, "Q4_K_M", 8192).kv_cache == 2 * est.kv_cache


def test_bigger_types_and_contexts_need_more(reg: registry.Registry) -> None:
    e = reg.lookup("qwen1.5-7b-chat")
    totals = [planner.for_entry(e, t, 4096).total for t in planner.PLAN_TYPES]
    assert totals == sorted(totals)
    assert planner.for_entry(e, "Q4_K_M", 32768).total > planner.for_entry(e, "Q4_K_M", 4096).total


def test_refusal_names_the_numbers_and_what_to_change(reg: registry.Registry) -> None:
    e = reg.lookup("llama-2-13b-chat")
    need = planner.for_entry(e, "Q8_0", 4096).total
    machine = laptop(need / GIB)  # exactly the need: no headroom left
    with pytest.raises(EdgeLLMError) as err:
        planner.refuse_unless_fits_entry(e, "Q8_0", 4096, machine)
    text = str(err.value)
    assert "llama-2-13b-chat:Q8_0 at 4096 tokens needs" in text and "of RAM" in text and "is available" in text
    assert "edgellm pull llama-2-13b-chat:Q6_K" in text  # the largest smaller type that fits
    assert planner.refuse_unless_fits_entry(e, "Q4_K_M", 4096, machine).total < need


def test_smaller_context_is_suggested_when_the_kv_cache_is_the_problem(reg: registry.Registry) -> None:
    e = reg.lookup("qwen-7b-chat")  # 32K context, no GQA: a 2 GiB KV cache per 4K tokens
    at_4k = planner.for_entry(e, "Q4_K_M", 4096).total
    machine = laptop((at_4k + planner.RAM_HEADROOM) / GIB + 0.1)
    with pytest.raises(EdgeLLMError, match=r"--ctx 4096"):
        planner.refuse_unless_fits_entry(e, "Q4_K_M", 32768, machine)


def test_load_check_refuses_with_the_numbers(default_model: Path) -> None:
    _, _, est = planner.for_file(default_model, 8192)
    machine = laptop((est.total + planner.RAM_HEADROOM) / GIB - 0.05)
    with pytest.raises(EdgeLLMError) as err:
        planner.check_load(default_model, 8192, machine=machine)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf at 8192 tokens needs" in str(err.value)
    assert "--ctx 4096" in str(err.value)
    assert planner.check_load(default_model, 2048, machine=machine).total < est.total


def test_auto_gpu_layers_fills_free_vram_and_leaves_headroom(default_model: Path) -> None:
    geom, weights, est = planner.for_file(default_model, 4096)
    assert planner.plan_gpu_layers(default_model, 4096, machine=laptop(16)).layers == 0  # CPU build: nothing to offload
    assert planner.plan_gpu_layers(default_model, 4096, machine=laptop(16, vram_gib=0.3)).layers == 0  # under headroom
    assert planner.plan_gpu_layers(default_model, 4096, machine=laptop(16, vram_gib=8)).layers == -1  # all, output too
    for layers in (1, 7, geom.layers // 2, geom.layers):
        need = planner.estimate(geom, weights, 4096, gpu_layers=layers).vram
        headroom = planner.vram_headroom(laptop(16, vram_gib=0))  # 1 GiB: more than 10% of the 8 GiB card
        machine = Machine(32 * GIB, 16 * GIB, True, (Gpu("GPU", 8 * GIB, need + headroom),))
        assert planner.plan_gpu_layers(default_model, 4096, machine=machine).layers == layers
    half = planner.estimate(geom, weights, 4096, gpu_layers=geom.layers // 2)
    assert half.ram < est.ram and half.vram > 0  # offloaded layers leave RAM


def test_auto_says_what_it_chose_from_which_numbers(default_model: Path) -> None:
    geom, weights, _ = planner.for_file(default_model, 4096)
    need = planner.estimate(geom, weights, 4096, gpu_layers=7).vram
    headroom = GIB  # the floor: 10% of an 8 GiB card is less
    machine = Machine(32 * GIB, 16 * GIB, True, (Gpu("GPU", 8 * GIB, need + headroom),))
    fit = planner.plan_gpu_layers(default_model, 4096, machine=machine)
    assert (fit.layers, fit.vram_needed, fit.vram_free, fit.headroom) == (7, need, need + headroom, headroom)
    assert fit.describe() == (
        f"--gpu-layers auto: 7 of {geom.layers} layers on the GPU "
        f"(needs {human_bytes(need)} of {human_bytes(need + headroom)} free VRAM, keeping 1.1 GB free)"
    )
    assert "no GPU offload" in planner.plan_gpu_layers(default_model, 4096, machine=laptop(16)).describe()


def test_vram_shortage_is_refused(default_model: Path) -> None:
    with pytest.raises(EdgeLLMError, match="of VRAM for"):
        planner.check_load(default_model, 4096, gpu_layers=-1, machine=laptop(16, vram_gib=0.2))
    assert planner.check_load(default_model, 4096, gpu_layers=-1, machine=laptop(16)).ram  # CPU build: ignored


def test_nvidia_smi_csv_is_parsed() -> None:
    out = "NVIDIA H200, 143771, 143252\nNVIDIA GeForce RTX 4090, Founders, 24564, 1200\n\n[N/A]\n"
    assert hardware.parse_nvidia_smi(out) == (
        Gpu("NVIDIA H200", 143771 << 20, 143252 << 20),
        Gpu("NVIDIA GeForce RTX 4090, Founders", 24564 << 20, 1200 << 20),
    )


def test_fake_nvidia_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "nvidia-smi"
    tool.write_text(
        '#!/bin/sh\n[ "$1" = "--query-gpu=name,memory.total,memory.free" ] && echo "Fake GPU, 8192, 6000"\n'
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert hardware.nvidia_gpus() == (Gpu("Fake GPU", 8192 << 20, 6000 << 20),)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert hardware.nvidia_gpus() == ()


def test_this_machine() -> None:
    m = hardware.probe()
    assert 0 < m.ram_available <= m.ram_total
    assert m.gpu_offload == hardware.gpu_offload_supported()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", *args], capture_output=True, text=True, timeout=120)


def test_plan_cli_for_a_registry_model_and_a_file(default_model: Path) -> None:
    proc = cli("plan", "llama-2-7b-chat", "--ctx", "2048", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["type"].split()[0] for r in rows] == list(planner.PLAN_TYPES)
    assert all(r["memory"] > r["file_size"] for r in rows)
    table = cli("plan", "llama-2-70b-chat").stdout
    assert "Q4_K_M *" in table and " no " in table
    one = json.loads(cli("plan", str(default_model), "--ctx", "8192", "--json").stdout)["rows"]
    assert [r["type"] for r in one] == ["Q4_1"] and one[0]["fits"]
    assert cli("plan", "no-such-model").returncode == 1


def test_plan_a_type_not_pulled_while_another_is(default_model: Path) -> None:
    from edgellm.models.store import Ref, Store

    Store().install(default_model, Ref("llama-2-7b", "Q4_K_M"), {}, move=False)
    proc = cli("plan", "llama-2-7b:Q8_0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["type"].split()[0] for r in json.loads(proc.stdout)["rows"]] == ["Q8_0"]  # the type asked for
    pulled = json.loads(cli("plan", "llama-2-7b:Q4_K_M", "--json").stdout)["rows"]
    assert [r["type"] for r in pulled] == ["Q4_1"]  # the file in the store, read from its header


def test_plan_refuses_a_bad_gpu_layers_in_one_line() -> None:
    proc = cli("plan", "default", "--gpu-layers", "abc")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "edgellm: error: --gpu-layers takes a number of layers, `all` or `auto`, not 'abc'"


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("llama-2-70b", {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                         "num_attention_heads": 64, "num_key_value_heads": 8, "num_hidden_layers": 80,
                         "vocab_size": 32000, "max_position_embeddings": 4096}),
        ("chinese-alpaca-2-7b-16k", {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                     "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 55296,
                                     "max_position_embeddings": 4096,
                                     "rope_scaling": {"type": "linear", "factor": 4.0}}),
        ("qwen-14b-chat", {"model_type": "qwen", "hidden_size": 5120, "intermediate_size": 27392,
                           "num_attention_heads": 40, "num_hidden_layers": 40, "vocab_size": 152064,
                           "seq_length": 8192}),
        ("qwen1.5-4b-chat", {"model_type": "qwen2", "hidden_size": 2560, "intermediate_size": 6912,
                             "num_attention_heads": 20, "num_key_value_heads": 20, "num_hidden_layers": 40,
                             "vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": False}),
    ],
)  # fmt: skip
def test_checkpoint_config_sizes_like_the_registry(reg: registry.Registry, name: str, config: dict) -> None:
    """Before `edgellm quantize` converts a folder, its config.json sizes it like models.toml does."""
    shape, _ = planner.shape_from_hf_config(config)
    entry = reg.lookup(name).shape
    assert (shape.layers, shape.embedding, shape.heads, shape.kv_heads, shape.ffn, shape.vocab) == (
        entry.layers, entry.embedding, entry.heads, entry.kv_heads, entry.ffn, entry.vocab,
    )  # fmt: skip
    assert shape.params == pytest.approx(entry.params, rel=0.001)  # Qwen's q/k/v biases aside
    with pytest.raises(EdgeLLMError, match="Try a smaller type: `edgellm quantize -t Q"):
        planner.refuse_unless_fits_shape(
            name, shape, 4096, "F16", 4096, laptop(planner.for_entry(reg.lookup(name), "F16").total / GIB / 2),
            smaller_type="`edgellm quantize -t {type}`",
        )  # fmt: skip
