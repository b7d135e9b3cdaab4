// The small layers around singan_ms's convolutions, on CPU, as MindSpore AOT custom operators (signature and
// conventions as kernels.cc). Each replaces MindSpore operators that cost several times torch's kernel in the
// 256 px train step (docs/benchmarks.md, profile of 2026-12-02: MaxPoolGrad 41 ms against torch's 2; the
// perceptual loss's Sign / ReduceMean 50 ms; LeakyReLU's gradient as two Selects 37 ms; the patch sampler's
// Gather gradient with its Transposes 30 ms; a broadcast bias add's ReduceSum 22 ms), and computes what torch's
// CPU kernel computes: the same values bit for bit where torch's result is exactly rounded or a copy, sums in
// double (one rounding) where torch sums in float in its own order.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "aot.h"
#include "parallel.h"
#include "timing.h"

// ---- 2x2 max pooling, stride 2, no padding, floor mode (VGG16's MaxPool2d) ----

// torch's CPU kernel scans a window by rows, then columns, a value replacing the running maximum when greater or
// NaN; the forward returns the value, the backward sends the gradient to its position. Both are written without
// data-dependent branches, which mispredict on activations and keep the loops scalar.

// The value torch's scan picks in one window.
static inline float window_max(const float* r0, const float* r1) {
  float m = -INFINITY;
  for (float v : {r0[0], r0[1], r1[0], r1[1]}) m = ((v > m) | (v != v)) ? v : m;
  return m;
}

static bool pool_geometry(int* ndims, int64_t** shapes, int x, int y, int64_t* planes, int64_t* w) {
  if (ndims[x] != 4 || ndims[y] != 4) return false;
  const int64_t* s = shapes[x];
  const int64_t* t = shapes[y];
  *planes = s[0] * s[1];
  *w = s[3];
  return t[0] == s[0] && t[1] == s[1] && t[2] == s[2] / 2 && t[3] == s[3] / 2;
}

// MaxPoolFwd(x) -> y
extern "C" int MaxPoolFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                          void*) {
  singan_timing::Scope timed(singan_timing::kMaxPoolFwd);
  int64_t planes, w;
  if (nparam != 2 || !all_float32(nparam, dtypes) || !pool_geometry(ndims, shapes, 0, 1, &planes, &w)) return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  const int64_t h = shapes[0][2], oh_n = shapes[1][2], ow_n = shapes[1][3];
  parallel_for(planes, planes * h * w, [=](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const float* xp = x + p * h * w;
      float* yp = y + p * oh_n * ow_n;
      for (int64_t oh = 0; oh < oh_n; ++oh) {
        const float* r0 = xp + 2 * oh * w;
        const float* r1 = r0 + w;
        float* out = yp + oh * ow_n;
        for (int64_t ow = 0; ow < ow_n; ++ow) out[ow] = window_max(r0 + 2 * ow, r1 + 2 * ow);
      }
    }
  });
  return 0;
}

static inline uint32_t bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

// Writes one window's gradient: g's bits where torch's scan of (r0[0], r0[1], r1[0], r1[1]) ends, +0 elsewhere.
// The scan ends at the last NaN if there is one, else at the first element equal to the maximum m (later equal
// values do not replace it), which masks express without a running state.
static inline void window_grad(const float* r0, const float* r1, float m, float g, float* d0, float* d1) {
  const float v[4] = {r0[0], r0[1], r1[0], r1[1]};
  uint32_t eq[4], nan[4];
  for (int j = 0; j < 4; ++j) {
    eq[j] = 0u - (uint32_t)(v[j] == m);
    nan[j] = 0u - (uint32_t)(v[j] != v[j]);
  }
  const uint32_t first_eq[4] = {eq[0], eq[1] & ~eq[0], eq[2] & ~(eq[0] | eq[1]), eq[3] & ~(eq[0] | eq[1] | eq[2])};
  const uint32_t last_nan[4] = {nan[0] & ~(nan[1] | nan[2] | nan[3]), nan[1] & ~(nan[2] | nan[3]), nan[2] & ~nan[3],
                                nan[3]};
  const uint32_t any_nan = nan[0] | nan[1] | nan[2] | nan[3];
  const uint32_t gb = bits(g);
  uint32_t out[4];
  for (int j = 0; j < 4; ++j) out[j] = gb & ((last_nan[j] & any_nan) | (first_eq[j] & ~any_nan));
  std::memcpy(d0, out, 8);
  std::memcpy(d1, out + 2, 8);
}

// MaxPoolBwd(x, dy) -> dx: each window's gradient to the element torch's forward picked, zero elsewhere (windows
// do not overlap, so every dx element is one dy element or zero, as in torch; a trailing odd row / column is
// zero).
extern "C" int MaxPoolBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                          void*) {
  singan_timing::Scope timed(singan_timing::kMaxPoolBwd);
  int64_t planes, w;
  if (nparam != 3 || !all_float32(nparam, dtypes) || !pool_geometry(ndims, shapes, 0, 1, &planes, &w) ||
      !same_shape(ndims, shapes, 0, 2))
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* dy = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[2]);
  const int64_t h = shapes[0][2], oh_n = shapes[1][2], ow_n = shapes[1][3];
  parallel_for(planes, planes * h * w, [=](int64_t b, int64_t e) {
    // The row's maxima first, in the forward's (vectorised) loop; window_grad's masks then need no running state.
    std::vector<float> maxima(ow_n);
    float* m = maxima.data();
    for (int64_t p = b; p < e; ++p) {
      const float* xp = x + p * h * w;
      const float* gp = dy + p * oh_n * ow_n;
      float* dp = dx + p * h * w;
      for (int64_t oh = 0; oh < oh_n; ++oh) {
        const float* r0 = xp + 2 * oh * w;
        float* d0 = dp + 2 * oh * w;
        for (int64_t ow = 0; ow < ow_n; ++ow) m[ow] = window_max(r0 + 2 * ow, r0 + w + 2 * ow);
        for (int64_t ow = 0; ow < ow_n; ++ow)
          window_grad(r0 + 2 * ow, r0 + w + 2 * ow, m[ow], gp[oh * ow_n + ow], d0 + 2 * ow, d0 + w + 2 * ow);
        if (w % 2) d0[w - 1] = d0[2 * w - 1] = 0.0f;
      }
      if (h % 2) std::memset(dp + (h - 1) * w, 0, sizeof(float) * w);
    }
  });
  return 0;
}

// ---- LeakyReLU: torch's x > 0 ? x : x * slope, gradient x > 0 ? dy : dy * slope ----

// out = x > 0 ? v : v * s over [b, e): the forward with v = x, the backward with v = dy. Both sides computed and
// selected by bit mask: GCC compiles the plain conditional (in any spelling it can see through) to a branch,
// which mispredicts on every other activation (5 ns an element) and keeps the loop scalar. Arguments rather than
// lambda captures, and restrict, so that no store may alias s.
static void leaky_relu(const float* __restrict x, const float* __restrict v, float s, float* __restrict out,
                       int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    const float pos = v[i], neg = v[i] * s;
    uint32_t p, q;
    std::memcpy(&p, &pos, 4);
    std::memcpy(&q, &neg, 4);
    const uint32_t take = 0u - (uint32_t)(x[i] > 0.0f);
    const uint32_t r = (p & take) | (q & ~take);
    std::memcpy(out + i, &r, 4);
  }
}

// LeakyReluFwd(x, slope[1]) -> y
extern "C" int LeakyReluFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                            void*) {
  singan_timing::Scope timed(singan_timing::kLeakyReluFwd);
  if (nparam != 3 || !all_float32(nparam, dtypes) || numel(ndims[1], shapes[1]) != 1) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float s = *static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t n = numel(ndims[0], shapes[0]);
  parallel_for(n, n, [=](int64_t b, int64_t e) { leaky_relu(x, x, s, y, b, e); });
  return 0;
}

// LeakyReluBwd(x, dy, slope[1]) -> dx
extern "C" int LeakyReluBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                            void*) {
  singan_timing::Scope timed(singan_timing::kLeakyReluBwd);
  if (nparam != 4 || !all_float32(nparam, dtypes) || numel(ndims[2], shapes[2]) != 1 ||
      !same_shape(ndims, shapes, 0, 1))
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* dy = static_cast<const float*>(params[1]);
  const float s = *static_cast<const float*>(params[2]);
  float* dx = static_cast<float*>(params[3]);
  const int64_t n = numel(ndims[0], shapes[0]);
  parallel_for(n, n, [=](int64_t b, int64_t e) { leaky_relu(x, dy, s, dx, b, e); });
  return 0;
}

// ---- mean |a - b| (the perceptual loss's L1 term) ----

// Blocks of a fixed size, summed in a fixed order: the result does not depend on the thread count.
constexpr int64_t kBlock = 1 << 16;

SINGAN_CLONES static void abs_diff_block_sums(const float* a, const float* b, int64_t n, double* sums, int64_t lo,
                                              int64_t hi) {
  for (int64_t k = lo; k < hi; ++k) {
    const int64_t i0 = k * kBlock, len = std::min(kBlock, n - i0);
    const float* ak = a + i0;
    const float* bk = b + i0;
    sums[k] = lane_sum(len, [ak, bk](auto at) { return wide(absf(at.f(ak) - at.f(bk))); });
  }
}

// L1MeanFwd(a, b) -> loss (0-d): the mean of |a - b| with the differences in float (as torch's a - b), summed in
// double and rounded once.
extern "C" int L1MeanFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                         void*) {
  singan_timing::Scope timed(singan_timing::kL1MeanFwd);
  if (nparam != 3 || !all_float32(nparam, dtypes) || !same_shape(ndims, shapes, 0, 1) ||
      numel(ndims[2], shapes[2]) != 1)
    return 1;
  const float* a = static_cast<const float*>(params[0]);
  const float* b = static_cast<const float*>(params[1]);
  float* loss = static_cast<float*>(params[2]);
  const int64_t n = numel(ndims[0], shapes[0]);
  if (n == 0) return 1;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> sums(blocks);
  double* s = sums.data();
  parallel_for(blocks, n, [=](int64_t lo, int64_t hi) { abs_diff_block_sums(a, b, n, s, lo, hi); });
  double total = 0;
  for (double v : sums) total += v;
  *loss = (float)(total / (double)n);
  return 0;
}

// L1MeanBwd(a, b, dloss) -> da = sgn(a - b) * (dloss / n), torch's product of the mean's gradient (in float) and
// abs's sgn (0 where a == b, and, as torch's, where the difference is NaN).
extern "C" int L1MeanBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                         void*) {
  singan_timing::Scope timed(singan_timing::kL1MeanBwd);
  if (nparam != 4 || !all_float32(nparam, dtypes) || !same_shape(ndims, shapes, 0, 1) ||
      !same_shape(ndims, shapes, 0, 3) || numel(ndims[2], shapes[2]) != 1)
    return 1;
  const float* a = static_cast<const float*>(params[0]);
  const float* b = static_cast<const float*>(params[1]);
  const int64_t n = numel(ndims[0], shapes[0]);
  const float g = *static_cast<const float*>(params[2]) / (float)n;
  float* da = static_cast<float*>(params[3]);
  parallel_for(n, n, [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float d = a[i] - b[i];
      da[i] = (float)((d > 0.0f) - (d < 0.0f)) * g;
    }
  });
  return 0;
}

// ---- per-channel bias of (N, C, ...) tensors (the transposed convolutions' bias) ----

// BiasAddFwd(x, bias (C)) -> y = x + bias[c]
extern "C" int BiasAddFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                          void*) {
  singan_timing::Scope timed(singan_timing::kBiasAddFwd);
  if (nparam != 3 || !all_float32(nparam, dtypes) || ndims[0] < 2 || ndims[1] != 1 || shapes[1][0] != shapes[0][1])
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* bias = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t c = shapes[0][1], planes = shapes[0][0] * c;
  const int64_t hw = planes != 0 ? numel(ndims[0], shapes[0]) / planes : 0;
  parallel_for(planes, planes * hw, [=](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const float v = bias[p % c];
      for (int64_t i = 0; i < hw; ++i) y[p * hw + i] = x[p * hw + i] + v;
    }
  });
  return 0;
}

SINGAN_CLONES static void channel_sums(const float* dy, float* db, int64_t n, int64_t c, int64_t hw, int64_t lo,
                                       int64_t hi) {
  for (int64_t ch = lo; ch < hi; ++ch) {
    double s = 0;
    for (int64_t k = 0; k < n; ++k) {
      const float* gp = dy + (k * c + ch) * hw;
      s += lane_sum(hw, [gp](auto at) { return at(gp); });
    }
    db[ch] = (float)s;
  }
}

// BiasAddBwd(dy) -> dbias (C): dy summed over every axis but 1, in double, rounded once.
extern "C" int BiasAddBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*,
                          void*) {
  singan_timing::Scope timed(singan_timing::kBiasAddBwd);
  if (nparam != 2 || !all_float32(nparam, dtypes) || ndims[0] < 2 || ndims[1] != 1 || shapes[1][0] != shapes[0][1])
    return 1;
  const float* dy = static_cast<const float*>(params[0]);
  float* db = static_cast<float*>(params[1]);
  const int64_t n = shapes[0][0], c = shapes[0][1];
  const int64_t hw = n * c != 0 ? numel(ndims[0], shapes[0]) / (n * c) : 0;
  parallel_for(c, n * c * hw, [=](int64_t lo, int64_t hi) { channel_sums(dy, db, n, c, hw, lo, hi); });
  return 0;
}

// ---- the patch sampler's gather: feature vectors at chosen spatial positions ----

static bool int_ids(const char* dtype, bool* wide) {
  *wide = std::strcmp(dtype, "int64") == 0;
  return *wide || std::strcmp(dtype, "int32") == 0;
}

// Position k of the id tensor, or -1 when it is outside [0, n).
static inline int64_t id_at(const void* ids, bool wide, int64_t k, int64_t n) {
  const int64_t v = wide ? static_cast<const int64_t*>(ids)[k] : static_cast<const int32_t*>(ids)[k];
  return v >= 0 && v < n ? v : -1;
}

// Whether the gather's parameters describe feat (B, C, P), ids (K) and rows (B, K, C): `feat` and `rows` are the
// indices of those two among params, and every id lies in [0, P) (else the entry points return 2).
static int gather_geometry(int* ndims, int64_t** shapes, const char** dtypes, void** params, int feat, int rows,
                           bool* wide) {
  if (!all_float32(1, dtypes + feat) || !all_float32(1, dtypes + rows) || !int_ids(dtypes[1], wide) ||
      ndims[feat] != 3 || ndims[1] != 1 || ndims[rows] != 3)
    return 1;
  const int64_t* f = shapes[feat];
  const int64_t* r = shapes[rows];
  if (r[0] != f[0] || r[1] != shapes[1][0] || r[2] != f[1]) return 1;
  for (int64_t j = 0; j < shapes[1][0]; ++j)
    if (id_at(params[1], *wide, j, f[2]) < 0) return 2;
  return 0;
}

// GatherPositionsFwd(feat (B, C, P), ids (K)) -> out (B, K, C), out[b, k, c] = feat[b, c, ids[k]]: the gather
// along positions and the transpose to one row per sample in one pass. Returns 2 for an id outside [0, P).
extern "C" int GatherPositionsFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                  void*, void*) {
  singan_timing::Scope timed(singan_timing::kGatherPositionsFwd);
  if (nparam != 3) return 1;
  bool wide;
  if (const int bad = gather_geometry(ndims, shapes, dtypes, params, 0, 2, &wide)) return bad;
  const int64_t bn = shapes[0][0], c = shapes[0][1], p = shapes[0][2], k = shapes[1][0];
  const float* feat = static_cast<const float*>(params[0]);
  const void* ids = params[1];
  float* out = static_cast<float*>(params[2]);
  for (int64_t b = 0; b < bn; ++b)
    for (int64_t j = 0; j < k; ++j) {
      const float* src = feat + b * c * p + id_at(ids, wide, j, p);
      float* dst = out + (b * k + j) * c;
      for (int64_t ch = 0; ch < c; ++ch) dst[ch] = src[ch * p];
    }
  return 0;
}

// GatherPositionsBwd(dout (B, K, C), ids (K), feat (for its shape; not read)) -> dfeat (B, C, P): zero except
// the sampled positions, which receive their rows' gradients (added in k order should an id repeat).
extern "C" int GatherPositionsBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                  void*, void*) {
  singan_timing::Scope timed(singan_timing::kGatherPositionsBwd);
  if (nparam != 4 || !all_float32(1, dtypes + 3) || !same_shape(ndims, shapes, 2, 3)) return 1;
  bool wide;
  if (const int bad = gather_geometry(ndims, shapes, dtypes, params, 2, 0, &wide)) return bad;
  const int64_t bn = shapes[2][0], c = shapes[2][1], p = shapes[2][2], k = shapes[1][0];
  const float* dout = static_cast<const float*>(params[0]);
  const void* ids = params[1];
  float* dfeat = static_cast<float*>(params[3]);
  parallel_for(bn * c, bn * c * p, [=](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t b = row / c, ch = row % c;
      float* dp = dfeat + row * p;
      std::memset(dp, 0, sizeof(float) * p);
      for (int64_t j = 0; j < k; ++j) dp[id_at(ids, wide, j, p)] += dout[(b * k + j) * c + ch];
    }
  });
  return 0;
}
