// The worker pool: shared state lives in linear memory (shared by every instance), so a task
// published by the main instance is seen by the worker instances parked in worker_loop().
#include "threadpool.h"
#include <stdint.h>

namespace {

// Publishing protocol: `generation` is odd while the main thread writes a job and even once the
// job is ready. A worker counts itself in `active` before it looks at a job and re-checks the
// generation after; the main thread makes the generation odd and waits for `active` to drain
// before it rewrites the job, so no worker can mix fields (or task counters) of two jobs.
struct Pool {
  volatile int32_t generation;  // +2 per parallel_for; odd while a job is being published
  volatile int32_t active;      // workers currently looking at (or running) a job
  volatile int32_t shutdown;
  volatile int32_t abort;       // set by the host when a worker trapped; fails the running plan
  volatile int32_t next_task;
  volatile int32_t done_tasks;
  volatile int32_t n_tasks;
  volatile int32_t chunk;       // tasks claimed (and counted done) per atomic step
  volatile int32_t max_workers; // workers with id >= this sit the job out
  volatile int32_t workers_registered;
  task_fn fn;
  void* ctx;
};

Pool g_pool;
int g_threads = 1;     // for the plan being run (main instance only)
bool g_in_parallel = false;

inline int32_t load(volatile int32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
inline void store(volatile int32_t* p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
inline int32_t fetch_add(volatile int32_t* p, int32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

// Before a thread sleeps in memory.atomic.wait it polls for kSpinRounds rounds (~50 us here: a
// worker's CPU time per isolated 2-thread call grows 20 -> 65 us going from 2^15 to 2^18 rounds).
// A futex wake costs tens of microseconds on this VM, paid twice per parallel_for (the worker's
// wake at publish, the main thread's at join) when both sides sleep; spinning covers the gaps
// between back-to-back jobs (consecutive kernels of a plan) and the tail of a join. 2^15 rounds
// (~5 us) caught too few: 2-thread 128^3 GEMM 1.26-1.34x with 2^15, 1.66-1.72x with 2^18.
constexpr int kSpinRounds = 1 << 18;

// Polls until *p != v (true) or the spin budget is spent (false).
inline bool spin_while_equal(volatile int32_t* p, int32_t v) {
  for (int i = 0; i < kSpinRounds; ++i)
    if (__atomic_load_n(p, __ATOMIC_SEQ_CST) != v) return true;
  return false;
}

void run_tasks() {
  const int32_t n = load(&g_pool.n_tasks), chunk = load(&g_pool.chunk);
  for (;;) {
    const int32_t t0 = fetch_add(&g_pool.next_task, chunk);
    if (t0 >= n) break;
    const int32_t t1 = n - t0 < chunk ? n : t0 + chunk;
    for (int32_t t = t0; t < t1; ++t) g_pool.fn(g_pool.ctx, t);
    if (fetch_add(&g_pool.done_tasks, t1 - t0) + (t1 - t0) == n)
      __builtin_wasm_memory_atomic_notify((int32_t*)&g_pool.done_tasks, 1);
  }
}

// Tasks per claim: ~8 claims per thread. Kernels that give each plane (or channel) its own task
// ask for hundreds of tiny tasks (MobileNetV2's 576 x 14x14 depthwise planes: ~0.3 us each); one
// claim and one completion count per task made the two threads trade the counters' cache line
// twice per task. Tasks of a few per thread (GEMM grids, column blocks) keep a chunk of 1.
inline int32_t claim_chunk(int32_t n_tasks, int32_t threads) {
  const int32_t c = n_tasks / (threads * 8);
  return c < 1 ? 1 : c;
}

}  // namespace

int pool_threads() { return g_threads; }

void set_pool_threads(int n) { g_threads = n < 1 ? 1 : n; }

bool pool_aborted() { return load(&g_pool.abort) != 0; }

void parallel_for_raw(int n_tasks, task_fn fn, void* ctx) {
  if (n_tasks <= 0) return;
  int workers = g_threads - 1;
  if (workers > load(&g_pool.workers_registered)) workers = load(&g_pool.workers_registered);
  if (n_tasks == 1 || workers <= 0 || g_in_parallel) {
    for (int t = 0; t < n_tasks; ++t) fn(ctx, t);
    return;
  }
  g_in_parallel = true;
  const int32_t gen = load(&g_pool.generation);  // even: no job is being published
  store(&g_pool.generation, gen + 1);
  // A worker that trapped mid-job never leaves `active`: give up when the host set `abort`.
  for (int32_t a; (a = load(&g_pool.active)) != 0;) {
    if (load(&g_pool.abort)) {
      store(&g_pool.generation, gen);
      g_in_parallel = false;
      return;
    }
    __builtin_wasm_memory_atomic_wait32((int32_t*)&g_pool.active, a, 100000 /* 0.1 ms */);
  }
  g_pool.fn = fn;
  g_pool.ctx = ctx;
  store(&g_pool.n_tasks, n_tasks);
  store(&g_pool.chunk, claim_chunk(n_tasks, workers + 1));
  store(&g_pool.done_tasks, 0);
  store(&g_pool.max_workers, workers);
  store(&g_pool.next_task, 0);
  store(&g_pool.generation, gen + 2);
  __builtin_wasm_memory_atomic_notify((int32_t*)&g_pool.generation, workers);
  run_tasks();
  // Join. Timed waits so that a worker that trapped (host sets `abort`) cannot hang us.
  for (;;) {
    int32_t done = load(&g_pool.done_tasks);
    if (done >= n_tasks || load(&g_pool.abort)) break;
    if (spin_while_equal(&g_pool.done_tasks, done)) continue;
    __builtin_wasm_memory_atomic_wait32((int32_t*)&g_pool.done_tasks, done, 1000000 /* 1 ms */);
  }
  g_in_parallel = false;
}

extern "C" {

// Parks the calling instance (one per host worker thread) inside wasm, running the tasks of
// each published job. worker_id counts from 1 (0 is the main thread). Returns 0 after
// pool_shutdown(), or 1 when no job came for idle_ms: the host then re-arms the instance's time
// limit (epoch deadline) and calls again, so a worker stuck in a kernel is bounded too.
__attribute__((export_name("worker_loop"))) int32_t worker_loop(int32_t worker_id, int32_t idle_ms) {
  int32_t seen = load(&g_pool.generation) & ~1;
  int64_t waited_ns = 0;
  const int64_t idle_ns = (int64_t)idle_ms * 1000000;
  bool spin = true;  // once after each job (not on every idle 10 ms slice)
  for (;;) {
    int32_t gen;
    while (((gen = load(&g_pool.generation)) == seen || (gen & 1)) && !load(&g_pool.shutdown)) {
      if (waited_ns >= idle_ns) return 1;
      if (spin) {
        spin = false;
        if (spin_while_equal(&g_pool.generation, gen)) continue;
      }
      const int64_t slice = 10000000;  // 10 ms
      __builtin_wasm_memory_atomic_wait32((int32_t*)&g_pool.generation, gen, slice);
      waited_ns += slice;
    }
    if (load(&g_pool.shutdown)) return 0;
    seen = gen;
    waited_ns = 0;
    spin = true;
    fetch_add(&g_pool.active, 1);
    if (load(&g_pool.generation) == gen && worker_id <= load(&g_pool.max_workers)) run_tasks();
    if (fetch_add(&g_pool.active, -1) == 1)
      __builtin_wasm_memory_atomic_notify((int32_t*)&g_pool.active, 1);
  }
}

// The host registers each worker thread once (and unregisters it when the thread ends), so
// parallel_for knows how many helpers exist even while one is between two worker_loop calls.
__attribute__((export_name("pool_register_worker"))) void pool_register_worker(int32_t delta) {
  fetch_add(&g_pool.workers_registered, delta);
}

__attribute__((export_name("pool_shutdown"))) void pool_shutdown() {
  store(&g_pool.shutdown, 1);
  __builtin_wasm_memory_atomic_notify((int32_t*)&g_pool.generation, 0x7fffffff);
}

// Host hook: a worker trapped; make the running parallel_for return.
__attribute__((export_name("pool_abort"))) void pool_abort() {
  store(&g_pool.abort, 1);
  __builtin_wasm_memory_atomic_notify((int32_t*)&g_pool.done_tasks, 0x7fffffff);
}


}  // extern "C"
