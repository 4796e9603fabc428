# Build, set up, test and benchmark torch_wasm_backend. `make help` lists the targets.
PYTHON ?= python3
EMCC ?= emcc
WASM := torch_wasm_backend/kernels.wasm
# The JS loader's copy of kernel_abi.def's run_plan error codes (a browser cannot read the .def).
JS_ABI := torch_wasm_backend/js/abi_generated.mjs
KERNEL_SOURCES := $(wildcard kernels_cpp/*.cpp) $(wildcard kernels_cpp/*.h) kernels_cpp/kernel_abi.def
# Stack of the main instance; worker instances get their own stacks from the host allocator.
COMPILE_FLAGS := -O3 -std=c++17 -msimd128 -matomics -mbulk-memory -fno-exceptions -fno-rtti
LINK_FLAGS := -s STANDALONE_WASM=1 -s IMPORTED_MEMORY=1 -s INITIAL_MEMORY=16MB -s MAXIMUM_MEMORY=4GB \
  -s ALLOW_MEMORY_GROWTH=1 -s TOTAL_STACK=1MB -s EXPORTED_FUNCTIONS=stackRestore,stackSave \
  -Wl,--shared-memory --no-entry -matomics -mbulk-memory
# Keep each kernel its own wasm function: wasm-opt -O3 inlines every function with one caller, and
# each k_* kernel has one (run_plan's switch), which made run_plan a 110 KB function. V8 runs a
# function's first calls in its baseline compiler (Liftoff) and swaps in optimized (TurboFan) code
# only at the function's next call: run_plan is called once per run, and its TurboFan compile took
# 0.7 s here, so a model ran up to 2x slow for its first runs. (The relaxed build is linked without
# wasm-opt and never inlined them.) 100: small helpers with one caller are still inlined.
NO_KERNEL_INLINING := -s BINARYEN_EXTRA_PASSES=--one-caller-inline-max-function-size=100
EMCC_FLAGS := $(COMPILE_FLAGS) $(LINK_FLAGS) $(NO_KERNEL_INLINING)

# The relaxed-SIMD build (f32x4.relaxed_madd in GEMM and convolution; docs/design.md decision 4):
# Debian's emcc 3.1.6 ships clang 14, which has no relaxed SIMD, so it is pointed at Debian's
# clang-19 / lld-19 (EM_LLVM_ROOT; emcc calls its tools by their -14 names, hence the directory of
# links). Its binaryen (version 108) cannot parse relaxed opcodes, so the objects are compiled at -O3
# and linked at -O0 (no wasm-opt pass) with WASM_BIGINT (no legalization pass) and the metadata read
# by emcc's Python reader instead of wasm-emscripten-finalize: no binaryen tool touches the module.
WASM_RELAXED := torch_wasm_backend/kernels_relaxed.wasm
LLVM19 ?= /usr/lib/llvm-19/bin
RELAXED_BUILD := build/relaxed
RELAXED_OBJECTS := $(patsubst kernels_cpp/%.cpp,$(RELAXED_BUILD)/%.o,$(wildcard kernels_cpp/*.cpp))
RELAXED_ENV := EM_LLVM_ROOT=$(abspath $(RELAXED_BUILD)/llvm) EMCC_READ_METADATA=python

.PHONY: help kernels setup demo test bench bench-web bench-ort clean

help:
	@echo "make setup   install system + Python dependencies, build the kernels, install the package"
	@echo "make demo    setup, then run examples/demo.py"
	@echo "make test    run the whole test suite"
	@echo "make bench   run the benchmark suites"
	@echo "make bench-web  exported .wasm vs ONNX Runtime Web vs TensorFlow.js wasm in Node.js, into BENCHMARKS.md; then"
	@echo "                our int8 files vs ORT-web's int8 (QDQ / dynamic) ones, each next to its float32 file (compare.py --int8)"
	@echo "                (npm + pip installs first; a smoke run: python benchmarks/web/compare.py --quick); bench-ort: the same"

kernels: $(WASM) $(WASM_RELAXED) $(JS_ABI)

$(JS_ABI): kernels_cpp/kernel_abi.def lowering/abi.py scripts/gen_js_abi.py
	$(PYTHON) scripts/gen_js_abi.py

$(WASM): $(KERNEL_SOURCES)
	@command -v $(EMCC) >/dev/null || { echo "error: emcc not found. Install Emscripten: 'apt-get update && apt-get install -y emscripten' (Debian), or activate an emsdk."; exit 1; }
	$(EMCC) $(EMCC_FLAGS) $(filter %.cpp,$(KERNEL_SOURCES)) -o $@

$(RELAXED_BUILD)/llvm/clang-14:
	@test -x $(LLVM19)/clang -a -x $(LLVM19)/wasm-ld || { echo "error: clang-19 / lld-19 not found in $(LLVM19) (the relaxed-SIMD kernel build needs them): 'apt-get install -y clang-19 lld-19'."; exit 1; }
	mkdir -p $(@D)
	for tool in clang clang++ wasm-ld llc opt llvm-nm llvm-ar llvm-ranlib llvm-objcopy llvm-dwarfdump; do \
	  ln -sf $(LLVM19)/$$tool $(@D)/$$tool-14; done

$(RELAXED_BUILD)/%.o: kernels_cpp/%.cpp $(KERNEL_SOURCES) $(RELAXED_BUILD)/llvm/clang-14
	$(RELAXED_ENV) $(EMCC) -Wno-version-check $(COMPILE_FLAGS) -mrelaxed-simd -c $< -o $@

$(WASM_RELAXED): $(RELAXED_OBJECTS)
	$(RELAXED_ENV) $(EMCC) -Wno-version-check -O0 -Wl,--strip-all -s ASSERTIONS=0 -s WASM_BIGINT=1 $(LINK_FLAGS) $^ -o $@

setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) examples/demo.py

# -n auto: one pytest worker per CPU (pytest-xdist); most of the suite is single-threaded Python
# (Dynamo tracing, lowering), so 2 workers on 2 cores take the suite from ~23 to ~10.5 minutes.
# --dist loadgroup: tests marked xdist_group("x") share one worker (and so its session fixtures:
# the text models are exported once, not once per worker); unmarked tests spread as before.
test:
	$(PYTHON) -m pytest -q -n auto --dist loadgroup tests

bench:
	$(PYTHON) -m pip install -q -e ".[bench]"
	mkdir -p .benchmarks
	$(PYTHON) -m pytest -q benchmarks --benchmark-only --benchmark-json=.benchmarks/all.json
	$(PYTHON) benchmarks/report.py .benchmarks/all.json --write

# issue 13: ours vs ONNX Runtime Web vs TensorFlow.js (wasm) in one Node.js process per thread count.
bench-web:
	$(PYTHON) -m pip install -q -e ".[bench]"
	cd benchmarks/web && npm ci --prefer-offline --no-audit --no-fund
	$(PYTHON) benchmarks/web/compare.py --write
	$(PYTHON) benchmarks/web/compare.py --int8 --write

bench-ort: bench-web

clean:
	rm -rf $(WASM) $(WASM_RELAXED) $(RELAXED_BUILD)
