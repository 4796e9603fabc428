// Generated from kernels_cpp/kernel_abi.def by scripts/gen_js_abi.py (`make kernels`): do not edit.

/** run_plan's error codes (RUN_ERROR in kernel_abi.def) -> what went wrong. */
export const RUN_PLAN_ERRORS = Object.freeze({ "-1": "unknown op code", "-2": "wrong argument count for op", "-3": "truncated plan", "-4": "a worker thread trapped", "-5": "an index out of range" });
/** run_plan's code for inputs a kernel rejected (an index out of range): the model stays usable. */
export const INPUT_ERROR = -5;
/** The functions a kernel module exports for its host (KERNEL_EXPORT), with their numbers of i32 parameters. */
export const KERNEL_EXPORTS = Object.freeze({ _initialize: 0, abi_version: 0, heap_base: 0, run_plan: 4, worker_loop: 2, pool_register_worker: 1, pool_shutdown: 0, pool_abort: 0, stackRestore: 1 });
/** Plan op codes (OP) -> kernel names: Model.profile() names each timed record by its kernel. */
export const OP_NAMES = Object.freeze({ "1": "UNARY", "2": "BINARY", "3": "GEMM", "4": "PACK_B", "5": "CONV2D", "20": "CONV2D_WINOGRAD", "6": "CHANNEL_AFFINE", "7": "POOL2D", "8": "SOFTMAX", "9": "LAYERNORM", "10": "REDUCE", "11": "CAST", "12": "COMPARE", "13": "WHERE", "14": "INDEX_SELECT", "16": "INDEX_ND", "15": "CUMSUM", "17": "INT_BINARY", "18": "INT_REDUCE", "19": "ARG_REDUCE", "21": "MAP", "30": "GATHER", "31": "CONV3D", "32": "POOL3D", "40": "QUANTIZE", "41": "DEQUANTIZE", "42": "QGEMM", "43": "QPACK", "44": "QCONV2D", "48": "QDYNPACK", "49": "QGEMM_DYN", "60": "QREQUANT", "61": "QADD", "62": "QPOOL2D", "63": "WOLINEAR", "64": "QCONV2D_WINO", "99": "DEBUG_TRAP", "98": "DEBUG_STALL" });
