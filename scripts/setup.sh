#!/usr/bin/env bash
# Sets up everything from nothing on a Debian machine with Python 3.11: Emscripten (to build the
# kernels; clang-19 and lld-19 for their relaxed-SIMD build, which Emscripten's own clang 14 lacks), Node.js and Chromium (the export tests run exported models in both: Debian packages,
# nothing downloads a browser), npm (a test packs and installs the JS loader's package; the web
# benchmark's packages, which a test runs), torch
# 2.13.0 CPU (installed first, so no CUDA build is pulled), this package (editable) with its test
# dependencies (wasm-tools among them), and the kernel module.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

MISSING=""
command -v emcc >/dev/null 2>&1 || MISSING="$MISSING emscripten"
[ -x /usr/lib/llvm-19/bin/clang ] || MISSING="$MISSING clang-19"
[ -x /usr/lib/llvm-19/bin/wasm-ld ] || MISSING="$MISSING lld-19"
command -v node >/dev/null 2>&1 || MISSING="$MISSING nodejs"
command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium"
command -v npm >/dev/null 2>&1 || MISSING="$MISSING npm"   # (nodesource's nodejs bundles it; Debian's does not)
if [ -n "$MISSING" ]; then
  echo "== installing Debian packages:$MISSING"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MISSING >/dev/null
fi

echo "== installing torch 2.13.0 (CPU) and the package"
$PYTHON -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PYTHON -m pip install -q --disable-pip-version-check -e ".[test]"

# The web benchmark's npm packages (onnxruntime-web, TensorFlow.js; pinned by its package-lock.json):
# tests/export/test_tfjs_graph.py runs its TF.js side. --prefer-offline: npm's cache when it has them
# (~20 s); offline without them the rest of the setup goes on and that test says what is missing.
echo "== installing benchmarks/web's npm packages"
(cd benchmarks/web && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) \
  || echo "warning: npm ci in benchmarks/web failed (offline?): make bench-web and tests/export/test_tfjs_graph.py need it"

echo "== building the wasm kernels"
make -s -j2 kernels PYTHON="$PYTHON"
echo "== setup done"
