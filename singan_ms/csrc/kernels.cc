// CPU kernels for singan_ms, loaded by singan_ms/native.py as MindSpore AOT custom operators.
//
// Every function has MindSpore's AOT signature: params holds the inputs' then the outputs' data pointers;
// ndims / shapes / dtypes describe them. A non-zero return makes MindSpore raise.
// Threads: parallel.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "aot.h"
#include "parallel.h"
#include "timing.h"

// Mean and 1/std (biased variance, two passes, double accumulation) of one plane of n floats.
SINGAN_INLINE void plane_stats(const float* x, int64_t n, double* mean, double* rstd) {
  const double m = lane_sum(n, [x](auto at) { return at(x); }) / n;
  const double q = lane_sum(n, [x, m](auto at) {
    const auto d = at(x) - m;
    return d * d;
  });
  *mean = m;
  *rstd = 1.0 / std::sqrt(q / n + 1e-5);  // torch's default eps
}

SINGAN_CLONES static void norm_fwd_planes(const float* x, float* y, double* stats, int64_t hw, int64_t b,
                                          int64_t e) {
  for (int64_t p = b; p < e; ++p) {
    const float* xp = x + p * hw;
    double mean, r;
    plane_stats(xp, hw, &mean, &r);
    stats[2 * p] = mean;
    stats[2 * p + 1] = r;
    float* yp = y + p * hw;
    for (int64_t i = 0; i < hw; ++i) yp[i] = (float)((xp[i] - mean) * r);
  }
}

static bool norm_geometry(int* ndims, int64_t** shapes, int x, int stats, int64_t* planes, int64_t* hw) {
  if (ndims[x] < 3 || ndims[stats] != 2) return false;
  *planes = shapes[x][0] * shapes[x][1];
  *hw = numel(ndims[x] - 2, shapes[x] + 2);
  return shapes[stats][0] == *planes && shapes[stats][1] == 2;
}

// Instance norm (torch's InstanceNorm2d, affine off, eps 1e-5) of x (N, C, H, W) -> y, stats. Statistics in
// double and y rounded once: the correctly rounded normalisation up to the double sums' error. stats (N * C, 2)
// float64 holds each plane's mean and 1/std for the backward.
extern "C" int InstanceNormFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void* stream, void* extra) {
  singan_timing::Scope timed(singan_timing::kInstanceNormFwd);
  int64_t planes, hw;
  if (nparam != 3 || !all_float32(2, dtypes) || std::strcmp(dtypes[2], "float64") != 0 ||
      !norm_geometry(ndims, shapes, 0, 2, &planes, &hw))
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  double* stats = static_cast<double*>(params[2]);
  parallel_for(planes, planes * hw, [=](int64_t b, int64_t e) { norm_fwd_planes(x, y, stats, hw, b, e); });
  return 0;
}

SINGAN_CLONES static void norm_bwd_planes(const float* x, const float* dy, const double* stats, float* dx,
                                          int64_t hw, int64_t b, int64_t e) {
  for (int64_t p = b; p < e; ++p) {
    const float* xp = x + p * hw;
    const float* gp = dy + p * hw;
    const double mean = stats[2 * p], r = stats[2 * p + 1];
    const double sg = lane_sum(hw, [gp](auto at) { return at(gp); });
    const double sgx = lane_sum(hw, [gp, xp, mean](auto at) { return at(gp) * (at(xp) - mean); });
    const double mg = sg / hw, mgx = sgx * r / hw;
    float* dp = dx + p * hw;
    for (int64_t i = 0; i < hw; ++i) dp[i] = (float)(r * (gp[i] - mg - (xp[i] - mean) * r * mgx));
  }
}

// Gradient of InstanceNormFwd: with xh = (x - mean) * rstd, per plane dx = rstd * (dy - mean(dy) - xh *
// mean(dy * xh)), all in double. Inputs x, dy and the forward's stats of the same call; output dx.
extern "C" int InstanceNormBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void* stream, void* extra) {
  singan_timing::Scope timed(singan_timing::kInstanceNormBwd);
  int64_t planes, hw;
  if (nparam != 4 || !all_float32(2, dtypes) || std::strcmp(dtypes[2], "float64") != 0 ||
      !all_float32(1, dtypes + 3) || !norm_geometry(ndims, shapes, 0, 2, &planes, &hw))
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* dy = static_cast<const float*>(params[1]);
  const double* stats = static_cast<const double*>(params[2]);
  float* dx = static_cast<float*>(params[3]);
  parallel_for(planes, planes * hw, [=](int64_t b, int64_t e) { norm_bwd_planes(x, dy, stats, dx, hw, b, e); });
  return 0;
}

// Reflection padding by the same amount p on each side of H and of W (torch's ReflectionPad2d): x (N, C, H, W)
// -> y (N, C, H + 2p, W + 2p); p is read from the two shapes. Input index of output index o along a side of n.
static inline int64_t reflect(int64_t o, int64_t p, int64_t n) {
  const int64_t i = o - p;
  return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
}

static bool pad_geometry(int* ndims, int64_t** shapes, int small, int big, int64_t* planes, int64_t* h,
                         int64_t* w, int64_t* ph, int64_t* pw) {
  if (ndims[small] != 4 || ndims[big] != 4) return false;
  const int64_t* s = shapes[small];
  const int64_t* b = shapes[big];
  *planes = s[0] * s[1];
  *h = s[2];
  *w = s[3];
  *ph = (b[2] - s[2]) / 2;
  *pw = (b[3] - s[3]) / 2;
  // torch's own limit: the pad must be smaller than the side it reflects.
  return b[0] == s[0] && b[1] == s[1] && b[2] == s[2] + 2 * *ph && b[3] == s[3] + 2 * *pw && *ph < *h &&
         *pw < *w && *ph >= 0 && *pw >= 0;
}

extern "C" int ReflectionPadFwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  singan_timing::Scope timed(singan_timing::kReflectionPadFwd);
  int64_t planes, h, w, ph, pw;
  if (nparam != 2 || !all_float32(nparam, dtypes) || !pad_geometry(ndims, shapes, 0, 1, &planes, &h, &w, &ph, &pw))
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  const int64_t ho = h + 2 * ph, wo = w + 2 * pw;
  parallel_for(planes, planes * ho * wo, [=](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const float* xp = x + p * h * w;
      float* yp = y + p * ho * wo;
      for (int64_t oh = 0; oh < ho; ++oh) {
        const float* row = xp + reflect(oh, ph, h) * w;
        float* out = yp + oh * wo;
        for (int64_t ow = 0; ow < pw; ++ow) out[ow] = row[pw - ow];
        std::copy(row, row + w, out + pw);
        for (int64_t ow = pw + w; ow < wo; ++ow) out[ow] = row[2 * (w - 1) - (ow - pw)];
      }
    }
  });
  return 0;
}

// Gradient of ReflectionPadFwd: inputs dy (N, C, H + 2p, W + 2p) and x (for its shape; not read); output dx.
// Each dx element is the sum of the dy elements that copied it, added in dy's row-major order from zero: the
// order of torch's CPU kernel, so the sums round as torch's do.
extern "C" int ReflectionPadBwd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  singan_timing::Scope timed(singan_timing::kReflectionPadBwd);
  int64_t planes, h, w, ph, pw;
  if (nparam != 3 || !all_float32(nparam, dtypes) || !pad_geometry(ndims, shapes, 1, 0, &planes, &h, &w, &ph, &pw))
    return 1;
  const float* dy = static_cast<const float*>(params[0]);
  float* dx = static_cast<float*>(params[2]);
  const int64_t ho = h + 2 * ph, wo = w + 2 * pw;
  parallel_for(planes, planes * ho * wo, [=](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const float* gp = dy + p * ho * wo;
      float* dp = dx + p * h * w;
      std::fill(dp, dp + h * w, 0.0f);
      for (int64_t oh = 0; oh < ho; ++oh) {
        float* row = dp + reflect(oh, ph, h) * w;
        const float* g = gp + oh * wo;
        for (int64_t ow = 0; ow < pw; ++ow) row[pw - ow] += g[ow];
        for (int64_t iw = 0; iw < w; ++iw) row[iw] += g[pw + iw];
        for (int64_t ow = pw + w; ow < wo; ++ow) row[2 * (w - 1) - (ow - pw)] += g[ow];
      }
    }
  });
  return 0;
}

// restrict: without it GCC assumes the outputs may overlap the inputs and leaves the loop scalar.
SINGAN_CLONES static void adam_range(const float* __restrict p, const float* __restrict g,
                                     const float* __restrict m, const float* __restrict v, float* __restrict po,
                                     float* __restrict mo, float* __restrict vo, float coeff, bool small,
                                     float beta2, float omb2, float eps, float neg_step, float bc2s, int64_t b,
                                     int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    float gi = g[i], mi = m[i];
    float base = small ? mi : gi;
    float mn = (float)((double)base + (double)coeff * (double)(gi - mi));
    float vn = (float)((double)(v[i] * beta2) + (double)(omb2 * gi) * (double)gi);
    float denom = std::sqrt(vn) / bc2s + eps;
    po[i] = p[i] + neg_step * mn / denom;
    mo[i] = mn;
    vo[i] = vn;
  }
}

// One torch.optim.Adam step (single-tensor path, no weight decay) for one tensor, rounding as torch's CPU
// kernels do. Inputs: param, grad, exp_avg, exp_avg_sq, scalars = [lerp_coeff, lerp_small, beta2, 1 - beta2,
// eps, -step_size, sqrt(bias_correction2)]; outputs: new param, exp_avg, exp_avg_sq.
// torch fuses two multiply-adds (lerp, addcmul) into FMAs; a double multiply-add of float operands is exact
// before its final rounding, which reproduces them (singan_ms/optim.py does the same with float64 tensors).
// Built with -ffp-contract=off so that no other operation gets fused.
extern "C" int AdamStep(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                        void* stream, void* extra) {
  singan_timing::Scope timed(singan_timing::kAdamStep);
  if (nparam != 8 || !all_float32(nparam, dtypes)) return 1;
  const float* p = static_cast<const float*>(params[0]);
  const float* g = static_cast<const float*>(params[1]);
  const float* m = static_cast<const float*>(params[2]);
  const float* v = static_cast<const float*>(params[3]);
  const float* s = static_cast<const float*>(params[4]);
  float* po = static_cast<float*>(params[5]);
  float* mo = static_cast<float*>(params[6]);
  float* vo = static_cast<float*>(params[7]);
  const int64_t n = numel(ndims[0], shapes[0]);
  const float coeff = s[0], beta2 = s[2], omb2 = s[3], eps = s[4], neg_step = s[5], bc2s = s[6];
  const bool small = s[1] != 0.0f;
  parallel_for(n, n, [=](int64_t b, int64_t e) { adam_range(p, g, m, v, po, mo, vo, coeff, small, beta2, omb2, eps,
                                                         neg_step, bc2s, b, e); });
  return 0;
}

// Kernel timing for benchmarks (timing.h): on != 0 starts (and zeroes) the totals, 0 stops them.
extern "C" void SinganKernelTiming(int on) {
  if (on) {
    for (int k = 0; k < singan_timing::kCount; ++k) {
      singan_timing::nanoseconds[k] = 0;
      singan_timing::calls[k] = 0;
    }
  }
  singan_timing::enabled = on != 0;
}

// Name, total nanoseconds and calls of kernel k (0 <= k < SinganKernelCount()); null name past the end.
extern "C" int SinganKernelCount() { return singan_timing::kCount; }
extern "C" const char* SinganKernelTime(int k, int64_t* nanoseconds, int64_t* calls) {
  if (k < 0 || k >= singan_timing::kCount) return nullptr;
  *nanoseconds = singan_timing::nanoseconds[k];
  *calls = singan_timing::calls[k];
  return singan_timing::kNames[k];
}
