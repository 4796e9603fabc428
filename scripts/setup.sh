#!/usr/bin/env bash
# Sets up everything from nothing on a Debian machine with Python 3.11: Emscripten (to build the
# kernels), torch 2.13.0 CPU (installed first, so no CUDA build is pulled), this package (editable)
# with its test dependencies, and the kernel module.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! command -v emcc >/dev/null 2>&1; then
  echo "== installing Emscripten (Debian package 'emscripten')"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq emscripten >/dev/null
fi

echo "== installing torch 2.13.0 (CPU) and the package"
$PYTHON -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PYTHON -m pip install -q --disable-pip-version-check -e ".[test]"

echo "== building the wasm kernels"
make -s kernels PYTHON="$PYTHON"
echo "== setup done"
