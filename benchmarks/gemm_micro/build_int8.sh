#!/bin/bash
# Builds the dynamic int8 linear micro-benchmark (int8_dynamic.cpp + the real kernels_cpp/
# quant_dynamic.cpp) into build/gemm_micro/NAME.wasm, to time next to build.sh's float32 GEMM:
#   benchmarks/gemm_micro/build.sh t6x8 && benchmarks/gemm_micro/build_int8.sh int8_dynamic
#   node --no-liftoff benchmarks/gemm_micro/run.mjs 21 build/gemm_micro/t6x8.wasm:splat build/gemm_micro/int8_dynamic.wasm
#   python3 benchmarks/gemm_micro/run.py 21 build/gemm_micro/t6x8.wasm build/gemm_micro/int8_dynamic.wasm
set -e
here=$(cd "$(dirname "$0")" && pwd); root=$here/../..; name=$1; shift
mkdir -p "$root/build/gemm_micro"
emcc -O3 -std=c++17 -msimd128 -fno-exceptions -fno-rtti "$@" -I"$root/kernels_cpp" "$here/int8_dynamic.cpp" \
  "$root/kernels_cpp/quant_dynamic.cpp" "$root/kernels_cpp/peak.cpp" \
  -s STANDALONE_WASM=1 -s ALLOW_MEMORY_GROWTH=1 -s INITIAL_MEMORY=64MB --no-entry -o "$root/build/gemm_micro/$name.wasm"
