#!/bin/bash
# Builds the standalone GEMM micro-benchmark (bench.cpp + the real kernels_cpp/gemm.cpp) into
# build/gemm_micro/NAME.wasm. Extra arguments go to the compiler, e.g. tile shapes:
#   benchmarks/gemm_micro/build.sh t2x16 -DGEMM_MR=2 -DGEMM_NP=2
#   benchmarks/gemm_micro/build.sh t6x8
# then, one process alternating the files (file:splat turns set_gemm_load_splat on, as the JS loader does):
#   node --no-liftoff benchmarks/gemm_micro/run.mjs 21 build/gemm_micro/t2x16.wasm build/gemm_micro/t6x8.wasm:splat
#   python3 benchmarks/gemm_micro/run.py 21 build/gemm_micro/t2x16.wasm build/gemm_micro/t6x8.wasm
# wasm-opt gets the Makefile's NO_KERNEL_INLINING limit, so a noinline function with one caller
# (gemm.cpp's ukernel_splat) stays a function of its own, as in kernels.wasm.
set -e
here=$(cd "$(dirname "$0")" && pwd); root=$here/../..; name=$1; shift
mkdir -p "$root/build/gemm_micro"
emcc -O3 -std=c++17 -msimd128 -fno-exceptions -fno-rtti "$@" -I"$root/kernels_cpp" "$here/bench.cpp" \
  "$root/kernels_cpp/gemm.cpp" "$root/kernels_cpp/elementwise.cpp" "$root/kernels_cpp/peak.cpp" \
  -s STANDALONE_WASM=1 -s ALLOW_MEMORY_GROWTH=1 -s INITIAL_MEMORY=64MB --no-entry \
  -s BINARYEN_EXTRA_PASSES=--one-caller-inline-max-function-size=100 -o "$root/build/gemm_micro/$name.wasm"
