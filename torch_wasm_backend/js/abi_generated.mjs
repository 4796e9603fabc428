// Generated from kernels_cpp/kernel_abi.def by scripts/gen_js_abi.py (`make kernels`): do not edit.

/** run_plan's error codes (RUN_ERROR in kernel_abi.def) -> what went wrong. */
export const RUN_PLAN_ERRORS = Object.freeze({ "-1": "unknown op code", "-2": "wrong argument count for op", "-3": "truncated plan", "-4": "a worker thread trapped", "-5": "an index out of range" });
/** run_plan's code for inputs a kernel rejected (an index out of range): the model stays usable. */
export const INPUT_ERROR = -5;
/** The functions a kernel module exports for its host (KERNEL_EXPORT), with their numbers of i32 parameters. */
export const KERNEL_EXPORTS = Object.freeze({ _initialize: 0, abi_version: 0, heap_base: 0, run_plan: 4, worker_loop: 2, pool_register_worker: 1, pool_shutdown: 0, pool_abort: 0, stackRestore: 1 });
