"""Public exceptions."""


class WasmBackendError(RuntimeError):
    """Raised when the wasm backend cannot do what was asked: an unsupported op in strict mode, a
    bad option, a missing or incompatible kernel module, or a failure inside wasm in strict mode."""


class WasmTrap(WasmBackendError):
    """A trap (or runtime failure) inside the wasm kernels while running a plan."""


class WasmOutOfMemory(WasmBackendError, MemoryError):
    """A plan needs more wasm memory than the runtime may have (wasm32: 4 GiB at most)."""


class WasmTimeout(WasmBackendError):
    """A call ran past its time limit (option timeout_ms); the runtime was rebuilt and is usable."""


class WasmInputError(WasmBackendError, IndexError):
    """The kernels rejected a call's inputs (an index out of range): the caller's error, not a
    failure of wasm; nothing was rebuilt. Compiled models raise eager's own error instead."""
