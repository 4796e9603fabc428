// Host-driven worker pool inside wasm (docs/design.md decision 2). The host parks N-1 threads in
// worker_loop(); parallel_for() on the calling thread hands out tasks to them and joins.
#pragma once
#include <stdint.h>
#include <type_traits>

typedef void (*task_fn)(void* ctx, int task);

// Threads the current plan may use (set by run_plan; 1 = run inline).
int pool_threads();

// Runs fn(ctx, t) for t in [0, n_tasks), spread over pool_threads() threads; returns when all
// tasks are done. Tasks must be independent. Nested calls run inline.
void parallel_for_raw(int n_tasks, task_fn fn, void* ctx);

template <class F>
static void parallel_for_trampoline(void* ctx, int task) { (*static_cast<F*>(ctx))(task); }

template <class F>
inline void parallel_for(int n_tasks, F&& fn) {
  using Fn = std::remove_reference_t<F>;
  parallel_for_raw(n_tasks, &parallel_for_trampoline<Fn>, (void*)&fn);
}

// Whether work of this many floating-point operations is worth waking the other threads for.
inline bool worth_threading(double flops) { return flops >= 200000.0; }

// Runs body(lo, hi) over the rows [0, n), split into contiguous ranges over the threads (4 tasks
// per thread, for balance) when `work` (flops or elements touched) is worth waking them for.
template <class F>
void parallel_rows(int64_t n, double work, F&& body) {
  if (n <= 0) return;
  int tasks = 1;
  if (pool_threads() > 1 && worth_threading(work)) {
    tasks = pool_threads() * 4;
    if (tasks > n) tasks = (int)n;
  }
  if (tasks == 1) {
    body((int64_t)0, n);
    return;
  }
  parallel_for(tasks, [&](int t) {
    const int64_t lo = n * t / tasks, hi = n * (t + 1) / tasks;
    if (lo < hi) body(lo, hi);
  });
}
