"""The set-up builds llama.cpp for the CPU it runs on, and never with AMX (which crashes
ggml_backend_amx_mul_mat on the first decode on some Xeons)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import llama_cpp
import pytest

from edgellm.runtime.backends import CPU_FEATURES, cpu_flags

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup.sh"
FEATURES = {flag: name for flag, name in CPU_FEATURES.items() if not name.startswith("AMX")}

linux_x86 = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64", reason="CPU flags from /proc/cpuinfo"
)


def cmake_args(cpuinfo_env: dict[str, str] | None = None) -> str:
    return subprocess.run(["bash", str(SETUP), "--print-cmake-args"], capture_output=True, text=True, check=True,
                          env={**os.environ, **(cpuinfo_env or {})}).stdout


@linux_x86
def test_flags_follow_this_cpu_and_exclude_amx() -> None:
    args = cmake_args()
    assert "-DGGML_NATIVE=OFF" in args
    for amx in ("AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{amx}=OFF" in args
    flags = cpu_flags() or set()
    for flag, feature in FEATURES.items():
        assert f"-DGGML_{feature}={'ON' if flag in flags else 'OFF'}" in args


@linux_x86
def test_installed_build_has_exactly_these_features() -> None:
    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX" not in info
    flags = cpu_flags() or set()
    for flag, feature in FEATURES.items():
        assert (f"{feature} = 1" in info) == (flag in flags), feature


def test_gpu_choice_is_validated() -> None:
    done = subprocess.run(["bash", str(SETUP), "--print-cmake-args"], capture_output=True, text=True,
                          env={**os.environ, "EDGELLM_GPU": "tpu"})
    assert done.returncode != 0 and "unknown EDGELLM_GPU='tpu'" in done.stderr
    assert "-DGGML_CUDA=on" in cmake_args({"EDGELLM_GPU": "cuda"})


def test_rerun_with_nothing_changed_takes_seconds() -> None:
    venv = Path(os.environ.get("EDGELLM_VENV", ROOT / ".venv"))
    if not (venv / ".llama-cpp-build").exists():
        pytest.skip("not set up with scripts/setup.sh")
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(SETUP), "--test"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already built" in done.stderr and "building" not in done.stderr
    assert time.perf_counter() - t0 < 60
