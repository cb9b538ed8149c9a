"""``python -m tests.rpc.limited BUDGET MODULE ARGS...``: run MODULE as __main__ with at most
BUDGET bytes of private memory beyond what the interpreter and llama.cpp's libraries already use
(RLIMIT_DATA: heap and anonymous mappings, where llama.cpp's CPU and RPC buffers live)."""

from __future__ import annotations

import resource
import runpy
import sys
from pathlib import Path


def data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData")


if __name__ == "__main__":
    budget, module, *rest = sys.argv[1:]
    import llama_cpp  # noqa: F401 - its libraries' own data counts towards the baseline

    limit = data_bytes() + int(budget)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__")
