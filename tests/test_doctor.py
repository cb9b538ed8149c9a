"""`edgellm doctor` on this machine's real build, and its warnings on the combinations that
crash or slow llama.cpp down."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from edgellm.commands.doctor import build_warnings
from edgellm.runtime import backends


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgellm", "doctor", *args], capture_output=True, text=True,
                          timeout=60)


def test_doctor_reports_this_machine() -> None:
    done = doctor("--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["backends"][-1] == "CPU" and any(d["kind"] == "CPU" for d in r["devices"])
    assert r["ram_total"] == psutil.virtual_memory().total
    assert r["cores_logical"] == psutil.cpu_count()
    assert r["threads_default"] >= 1
    assert r["build_features"]["CPU"] == backends.system_info()["CPU"]
    assert r["default_model"].endswith(".gguf")
    # the build set-up made matches this CPU: nothing to warn about
    assert r["warnings"] == []
    text = doctor()
    assert text.returncode == 0
    for word in ("backends", "GPU offload", "build features", "threads", "RAM", "warnings"):
        assert word in text.stdout


def test_amx_build_on_an_amx_cpu_is_a_warning() -> None:
    build = {"AVX2": "1", "AVX512": "1", "AMX_INT8": "1"}
    flags = {"avx2", "avx512f", "amx_int8", "amx_tile"}
    assert any("AMX_INT8" in w and "segfaults" in w for w in build_warnings(build, flags))


def test_instruction_set_the_cpu_lacks_is_a_crash_warning() -> None:
    warnings = build_warnings({"AVX512": "1", "AVX2": "1"}, {"avx2"})
    assert any("AVX512" in w and "SIGILL" in w for w in warnings)


def test_unused_instruction_set_is_a_speed_warning() -> None:
    warnings = build_warnings({"AVX": "1"}, {"avx", "avx2"})
    assert any("AVX2" in w and "slower" in w for w in warnings)
    assert build_warnings({}, None) == [], "no /proc/cpuinfo (macOS): nothing to compare"
