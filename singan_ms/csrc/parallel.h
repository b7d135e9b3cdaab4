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

// Sum in double over [0, n) with kLanes independent partial sums: one running sum waits a floating-point add
// latency per element; independent ones run at memory speed. The order differs from a plain loop by a few double
// ulps, far below the float32 rounding of every result.
//
// f is a generic lambda of an accessor `at`: at(p) is p's element(s) at the current position widened to double,
// at.f(p) the same in float, and wide(v) / absf(v) apply to either form, e.g. [=](auto at) { auto d = at(x) - m;
// return d * d; }. In the main loop `at` yields kLanes consecutive elements as one GCC vector (lane k sums
// elements k, k + kLanes, ...), so the loop vectorises at every instruction-set width: GCC does not vectorise
// the same arithmetic written per element (float-to-double conversions defeat its SLP pass), which left the
// norm kernels' sums scalar. Lane for lane the additions are the ones of the per-element loop, so the result is
// the same bit for bit.
constexpr int kLanes = 8;
typedef double LanesD __attribute__((vector_size(8 * kLanes)));
typedef float LanesF __attribute__((vector_size(4 * kLanes)));
typedef uint32_t LanesU __attribute__((vector_size(4 * kLanes)));

struct LanesAt {
  int64_t i;
  LanesF f(const float* p) const {
    LanesF v;
    __builtin_memcpy(&v, p + i, sizeof v);
    return v;
  }
  LanesD operator()(const float* p) const { return __builtin_convertvector(f(p), LanesD); }
};

struct OneAt {
  int64_t i;
  float f(const float* p) const { return p[i]; }
  double operator()(const float* p) const { return p[i]; }
};

SINGAN_INLINE LanesD wide(LanesF v) { return __builtin_convertvector(v, LanesD); }
SINGAN_INLINE double wide(float v) { return v; }
SINGAN_INLINE LanesF absf(LanesF v) { return (LanesF)((LanesU)v & 0x7fffffffu); }
SINGAN_INLINE float absf(float v) { return __builtin_fabsf(v); }

template <class F>
SINGAN_INLINE double lane_sum(int64_t n, F f) {
  LanesD acc = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) acc += f(LanesAt{i});
  double s = 0;
  for (; i < n; ++i) s += f(OneAt{i});
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}
