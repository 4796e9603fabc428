// The plan executor: one exported call runs a whole Plan (docs/design.md decision 1), dispatching each
// record to its kernel. Also exports the ABI version and the heap base the host allocates above.
#include "abi.h"
#include "threadpool.h"

void set_pool_threads(int n);
bool pool_aborted();

namespace {
bool g_input_error = false;  // set by input_error() during the current record (main thread only)
}  // namespace

void input_error() { g_input_error = true; }

extern "C" {
extern unsigned char __heap_base;

__attribute__((export_name("abi_version"))) int32_t abi_version() { return kAbiVersion; }

__attribute__((export_name("heap_base"))) uint32_t heap_base() {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&__heap_base));
}

// Runs the plan at `plan` (n_words int32). Returns 0, or a RUN_ERROR code of kernel_abi.def; on a
// failing record the word index of that record is stored at *error_at.
__attribute__((export_name("run_plan")))
int32_t run_plan(const int32_t* plan, int32_t n_words, int32_t n_threads, int32_t* error_at) {
  set_pool_threads(n_threads);
  int32_t pc = 0;
  while (pc < n_words) {
    if (pc + 2 > n_words) { *error_at = pc; return RUN_TRUNCATED; }
    const int32_t code = plan[pc], n_args = plan[pc + 1];
    if (pc + 2 + n_args > n_words) { *error_at = pc; return RUN_TRUNCATED; }
    const int32_t* args = plan + pc + 2;
    switch (code) {
#define OP(name, c, fields)                                                       \
      case c:                                                                     \
        if (n_args * 4 != (int32_t)sizeof(name##_args)) { *error_at = pc; return RUN_BAD_ARG_COUNT; } \
        k_##name(reinterpret_cast<const name##_args*>(args));                     \
        break;
#include "kernel_abi.def"
      default:
        *error_at = pc;
        return RUN_BAD_OP_CODE;
    }
    if (g_input_error) { g_input_error = false; *error_at = pc; return RUN_INPUT; }
    if (pool_aborted()) { *error_at = pc; return RUN_WORKER_ABORTED; }
    pc += 2 + n_args;
  }
  return 0;
}

}  // extern "C"

void k_DEBUG_TRAP(const DEBUG_TRAP_args*) { __builtin_trap(); }

namespace {
volatile int32_t g_stalled;

// The main instance's stack sits below __heap_base; worker stacks are allocated above it.
bool on_worker_thread() {
  return reinterpret_cast<uintptr_t>(__builtin_frame_address(0)) > reinterpret_cast<uintptr_t>(&__heap_base);
}
}  // namespace

void k_DEBUG_STALL(const DEBUG_STALL_args*) {
  __atomic_store_n(&g_stalled, 0, __ATOMIC_SEQ_CST);
  parallel_for(2, [](int) {
    if (on_worker_thread() || pool_threads() == 1) {
      __atomic_store_n(&g_stalled, 1, __ATOMIC_SEQ_CST);
      while (__atomic_load_n(&g_stalled, __ATOMIC_SEQ_CST) != 2) {
      }
    }
    while (__atomic_load_n(&g_stalled, __ATOMIC_SEQ_CST) == 0) {  // main: wait for a stuck worker
    }
  });
}
