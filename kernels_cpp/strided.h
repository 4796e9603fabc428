// The strided iteration shared by the elementwise-style kernels (UNARY, BINARY, CAST, COMPARE,
// WHERE): up to four operands over one 6-d index space given as sizes + per-operand element strides.
//
// The index space is first collapsed (dims of size 1 dropped, dims that are contiguous for every
// operand merged), so a plan that arrives uncollapsed still gets one long inner row. Work is then
// split into contiguous ranges of the row-major linear index, which serves both shapes of work:
// many short rows, and one huge flat row (a contiguous tensor).
#pragma once
#include <stdint.h>
#include <stddef.h>
#include "abi.h"
#include "threadpool.h"

enum { kMaxOperands = 4 };

// Collapsed view of up to three operands (out, a, b) over the same index space.
struct Space {
  int nd;
  int32_t size[kMaxDims];
  int32_t st[kMaxOperands][kMaxDims];
  int64_t total;
};

inline Space collapse(const int32_t* size, const int32_t* const* strides, int n_ops) {
  Space s;
  s.nd = 0;
  s.total = 1;
  for (int d = 0; d < kMaxDims; ++d) s.total *= size[d];
  for (int d = 0; d < kMaxDims; ++d) {
    if (size[d] == 1) continue;
    if (s.nd > 0) {
      // Merge into the previous (outer) kept dim when row-major contiguous for every operand.
      const int p = s.nd - 1;
      bool merge = true;
      for (int t = 0; t < n_ops; ++t)
        if (s.st[t][p] != strides[t][d] * size[d]) merge = false;
      if (merge) {
        s.size[p] *= size[d];
        for (int t = 0; t < n_ops; ++t) s.st[t][p] = strides[t][d];
        continue;
      }
    }
    s.size[s.nd] = size[d];
    for (int t = 0; t < n_ops; ++t) s.st[t][s.nd] = strides[t][d];
    ++s.nd;
  }
  if (s.nd == 0) {  // a single element
    s.nd = 1;
    s.size[0] = 1;
    for (int t = 0; t < n_ops; ++t) s.st[t][0] = 0;
  }
  return s;
}

// Calls row(offsets[n_ops], len) for every piece of the inner dim inside linear range [lo, hi).
template <class Row>
void walk_range(const Space& s, int n_ops, int64_t lo, int64_t hi, Row&& row) {
  const int inner = s.nd - 1;
  const int64_t L = s.size[inner];
  int64_t r = lo / L;
  int32_t col = (int32_t)(lo - r * L);
  int32_t idx[kMaxDims] = {0};
  ptrdiff_t off[kMaxOperands] = {0, 0, 0, 0};
  for (int d = inner - 1; d >= 0; --d) {
    idx[d] = (int32_t)(r % s.size[d]);
    r /= s.size[d];
    for (int t = 0; t < n_ops; ++t) off[t] += (ptrdiff_t)idx[d] * s.st[t][d];
  }
  int64_t pos = lo;
  while (pos < hi) {
    const int64_t len = (L - col < hi - pos) ? L - col : hi - pos;
    ptrdiff_t o[kMaxOperands];
    for (int t = 0; t < n_ops; ++t) o[t] = off[t] + (ptrdiff_t)col * s.st[t][inner];
    row(o, (int32_t)len);
    pos += len;
    col = 0;
    for (int d = inner - 1; d >= 0; --d) {  // odometer step over the outer dims
      for (int t = 0; t < n_ops; ++t) off[t] += s.st[t][d];
      if (++idx[d] < s.size[d]) break;
      for (int t = 0; t < n_ops; ++t) off[t] -= (ptrdiff_t)s.st[t][d] * s.size[d];
      idx[d] = 0;
    }
  }
}

// Splits the linear range into tasks when the work is worth more threads.
template <class Row>
void run_space(const Space& s, int n_ops, double flops_per_elem, Row&& row) {
  if (s.total <= 0) return;
  int n_tasks = 1;
  if (pool_threads() > 1 && worth_threading((double)s.total * flops_per_elem)) {
    int64_t by_size = s.total / 4096;
    n_tasks = pool_threads() * 4;
    if (by_size < n_tasks) n_tasks = by_size < 1 ? 1 : (int)by_size;
  }
  if (n_tasks == 1) {
    walk_range(s, n_ops, 0, s.total, row);
    return;
  }
  const int64_t total = s.total;
  parallel_for(n_tasks, [&](int t) {
    // Chunk edges on multiples of 16 elements keep flat chunks' vector loops aligned with each other.
    int64_t lo = (total * t / n_tasks) & ~(int64_t)15;
    int64_t hi = t + 1 == n_tasks ? total : (total * (t + 1) / n_tasks) & ~(int64_t)15;
    if (lo < hi) walk_range(s, n_ops, lo, hi, row);
  });
}

