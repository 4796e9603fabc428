// C++ view of kernel_abi.def: one argument struct per plan op, the sub-op enums, and the kernel
// entry points. Every field is one 32-bit word, so a struct is exactly its record in the Plan.
#pragma once
#include <stdint.h>

// Each include of kernel_abi.def below defines only the macros it reads (the others expand to
// nothing; the .def undefines all of them at its end).
#define ABI_VERSION(v) enum { kAbiVersion = v };
#define MAX_DIMS(n) enum { kMaxDims = n };
#define LAYOUT(name, value) enum { k##name = value };
#define MAP_LIMITS(max_instr, inputs, immediate) \
  enum { kMapMaxInstr = max_instr, kMapInputs = inputs, kMapImmediate = immediate };
#define ARG(x) int32_t x;
#define PTR(x) uint32_t x;
#define F32(x) float x;
#define ARR(x, n) int32_t x[n];
#define OP(name, code, fields) struct name##_args { fields };
#include "kernel_abi.def"

#define RUN_ERROR(name, code, message) RUN_##name = code,
enum RunError {
#include "kernel_abi.def"
};
#define UNARY_OP(name, code) UNARY_##name = code,
enum UnaryOp {
#include "kernel_abi.def"
};
#define BINARY_OP(name, code) BINARY_##name = code,
enum BinaryOp {
#include "kernel_abi.def"
};
#define REDUCE_OP(name, code) REDUCE_##name = code,
enum ReduceOp {
#include "kernel_abi.def"
};
#define POOL_MODE(name, code) POOL_##name = code,
enum PoolMode {
#include "kernel_abi.def"
};
#define COMPARE_OP(name, code) CMP_##name = code,
enum CompareOp {
#include "kernel_abi.def"
};
#define DTYPE(name, code) DT_##name = code,
enum DType {
#include "kernel_abi.def"
};
#define OP(name, code, fields) OP_##name = code,
enum OpCode {
#include "kernel_abi.def"
};
// One kernel entry point per plan op: k_NAME(const NAME_args*).
#define OP(name, code, fields) void k_##name(const name##_args* args);
#include "kernel_abi.def"

static_assert(sizeof(MAP_args::prog) == 6 * kMapMaxInstr * sizeof(int32_t),
              "kernel_abi.def: MAP's prog field must hold 6 words per instruction of MAP_LIMITS");

// Dispatching a runtime sub-op to a template instantiation: define the sub-op's macro as a case
// and include the .def inside the switch, e.g.
//   #define UNARY_OP(name, code) case UNARY_##name: kernel<UNARY_##name>(a); break;
//   #include "kernel_abi.def"
// so every op declared in the .def gets its case, and the default (an undeclared code) traps.

// A kernel whose inputs are invalid (an index out of range) calls this on the calling thread and
// returns without writing anything: run_plan then stops with RUN_INPUT (executor.cpp).
void input_error();

// A PTR field is a byte offset into the (shared) linear memory.
template <class T>
static inline T* at(uint32_t offset) { return reinterpret_cast<T*>(static_cast<uintptr_t>(offset)); }
