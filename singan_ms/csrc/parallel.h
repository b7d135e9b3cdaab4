// Threading and summation helpers shared by kernels.cc and layers.cc.
//
// Threads: plain std::thread over independent slices (planes, element ranges), because MindSpore's thread pool
// is not reachable from an AOT kernel; the count is OMP_NUM_THREADS if set (msrun sets 1 per worker), else all
// CPUs, and small tensors run on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

// Compute-bound loops get one copy per instruction set, picked at load time by the CPU the library runs on: the
// cached library is built for generic x86-64 (it may be shared between machines), where double arithmetic runs
// two lanes wide. Bit-identical across copies: -ffp-contract=off forbids fused multiply-adds, nothing is
// reassociated (lane_sum's lanes are explicit), and sqrt / division / conversions are exactly rounded.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define SINGAN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SINGAN_CLONES
#endif
// Helpers called inside those loops must be inlined into each copy to run at its width.
#define SINGAN_INLINE __attribute__((always_inline)) inline

inline int n_threads(int64_t work) {
  int n = (int)std::thread::hardware_concurrency();
  const char* e = std::getenv("OMP_NUM_THREADS");
  if (e && std::atoi(e) > 0) n = std::atoi(e);
  if (n < 1) n = 1;
  if (work < (1 << 15)) n = 1;
  return n;
}

template <class F>
inline void parallel_for(int64_t n, int64_t grain_elems, F f) {
  int t = n_threads(grain_elems);
  if (t > n) t = (int)n;
  if (t <= 1) { f(0, n); return; }
  std::vector<std::thread> th;
  int64_t chunk = (n + t - 1) / t;
  for (int i = 1; i < t; ++i) {
    int64_t b = i * chunk, e = std::min(n, b + chunk);
    if (b < e) th.emplace_back(f, b, e);
  }
  f(0, std::min(n, chunk));
  for (auto& x : th) x.join();
}

// Sum of f(i) over [0, n) in double with kLanes independent partial sums. One running sum waits a floating-point
// add latency per element; independent ones let the loop vectorise and run at memory speed. The order differs
// from a plain loop by a few double ulps, far below the float32 rounding of every result.
constexpr int kLanes = 8;
template <class F>
SINGAN_INLINE double lane_sum(int64_t n, F f) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += f(i + k);
  double s = 0;
  for (; i < n; ++i) s += f(i);
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

