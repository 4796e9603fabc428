// C++ view of kernel_abi.def: one argument struct per plan op, the sub-op enums, and the kernel
// entry points. Every field is one 32-bit word, so a struct is exactly its record in the Plan.
#pragma once
#include <stdint.h>

#define ABI_VERSION(v) enum { kAbiVersion = v };
#define MAX_DIMS(n) enum { kMaxDims = n };
#define GEMM_NR(n) enum { kGemmNR = n };
#define UNARY_OP(name, code)
#define BINARY_OP(name, code)
#define REDUCE_OP(name, code)
#define POOL_MODE(name, code)
#define COMPARE_OP(name, code)
#define DTYPE(name, code)
#define ARG(x) int32_t x;
#define PTR(x) uint32_t x;
#define F32(x) float x;
#define ARR(x, n) int32_t x[n];
#define OP(name, code, fields) struct name##_args { fields };
#include "kernel_abi.def"
#undef ABI_VERSION
#undef MAX_DIMS
#undef GEMM_NR
#undef UNARY_OP
#undef BINARY_OP
#undef REDUCE_OP
#undef POOL_MODE
#undef COMPARE_OP
#undef DTYPE
#undef OP
#undef ARG
#undef PTR
#undef F32
#undef ARR

#define ABI_VERSION(v)
#define MAX_DIMS(n)
#define GEMM_NR(n)
#define OP(name, code, fields)
#define REDUCE_OP(name, code)
#define POOL_MODE(name, code)
#define COMPARE_OP(name, code)
#define DTYPE(name, code)
#define BINARY_OP(name, code)
#define UNARY_OP(name, code) UNARY_##name = code,
enum UnaryOp {
#include "kernel_abi.def"
};
#undef UNARY_OP
#define UNARY_OP(name, code)
#undef BINARY_OP
#define BINARY_OP(name, code) BINARY_##name = code,
enum BinaryOp {
#include "kernel_abi.def"
};
#undef BINARY_OP
#define BINARY_OP(name, code)
#undef REDUCE_OP
#define REDUCE_OP(name, code) REDUCE_##name = code,
enum ReduceOp {
#include "kernel_abi.def"
};
#undef REDUCE_OP
#define REDUCE_OP(name, code)
#undef POOL_MODE
#define POOL_MODE(name, code) POOL_##name = code,
enum PoolMode {
#include "kernel_abi.def"
};
#undef POOL_MODE
#define POOL_MODE(name, code)
#undef COMPARE_OP
#define COMPARE_OP(name, code) CMP_##name = code,
enum CompareOp {
#include "kernel_abi.def"
};
#undef COMPARE_OP
#define COMPARE_OP(name, code)
#undef DTYPE
#define DTYPE(name, code) DT_##name = code,
enum DType {
#include "kernel_abi.def"
};
#undef DTYPE
#define DTYPE(name, code)
#undef OP
#define OP(name, code, fields) OP_##name = code,
enum OpCode {
#include "kernel_abi.def"
};
#undef OP
// One kernel entry point per plan op: k_NAME(const NAME_args*).
#define OP(name, code, fields) void k_##name(const name##_args* args);
#include "kernel_abi.def"
#undef OP
#undef ABI_VERSION
#undef MAX_DIMS
#undef GEMM_NR
#undef UNARY_OP
#undef BINARY_OP
#undef REDUCE_OP
#undef POOL_MODE
#undef COMPARE_OP
#undef DTYPE

// A kernel whose inputs are invalid (an index out of range) calls this on the calling thread and
// returns without writing anything: run_plan then stops with its input-error code (executor.cpp).
void input_error();

// A PTR field is a byte offset into the (shared) linear memory.
template <class T>
static inline T* at(uint32_t offset) { return reinterpret_cast<T*>(static_cast<uintptr_t>(offset)); }
