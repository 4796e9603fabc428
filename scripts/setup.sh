#!/usr/bin/env bash
# Sets up everything from nothing on a Debian machine with Python 3.11: Emscripten (to build the
# kernels), Node.js and Chromium (the export tests run exported models in both: Debian packages,
# nothing downloads a browser), npm (a test packs and installs the JS loader's package), torch
# 2.13.0 CPU (installed first, so no CUDA build is pulled), this package (editable) with its test
# dependencies (wasm-tools among them), and the kernel module.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

MISSING=""
command -v emcc >/dev/null 2>&1 || MISSING="$MISSING emscripten"
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

echo "== building the wasm kernels"
make -s kernels PYTHON="$PYTHON"
echo "== setup done"
