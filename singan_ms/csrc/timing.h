// Optional per-kernel wall-clock totals, so that bench/train_step_profile.py can split MindSpore's single
// "Custom" profiler row into convolution forward / backward, instance norm and Adam. Off unless
// SinganKernelTiming(1) was called; then each entry point adds its duration and a count (relaxed atomics:
// totals, not ordering, are what is read).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace singan_timing {

enum Kernel { kConvFwd, kConvFwdBias, kConvTransposeFwd, kConvBwdData, kConvBwdWeights, kConvBwdWeightsBias,
              kInstanceNormFwd, kInstanceNormBwd, kAdamStep, kReflectionPadFwd, kReflectionPadBwd, kMaxPoolFwd,
              kMaxPoolBwd, kLeakyReluFwd, kLeakyReluBwd, kL1MeanFwd, kL1MeanBwd, kBiasAddFwd, kBiasAddBwd,
              kGatherPositionsFwd, kGatherPositionsBwd, kCount };
inline const char* const kNames[kCount] = {
    "ConvFwd", "ConvFwdBias", "ConvTransposeFwd", "ConvBwdData", "ConvBwdWeights", "ConvBwdWeightsBias",
    "InstanceNormFwd", "InstanceNormBwd", "AdamStep", "ReflectionPadFwd", "ReflectionPadBwd", "MaxPoolFwd",
    "MaxPoolBwd", "LeakyReluFwd", "LeakyReluBwd", "L1MeanFwd", "L1MeanBwd", "BiasAddFwd", "BiasAddBwd",
    "GatherPositionsFwd", "GatherPositionsBwd"};
inline std::atomic<bool> enabled{false};
inline std::atomic<int64_t> nanoseconds[kCount];
inline std::atomic<int64_t> calls[kCount];

class Scope {
 public:
  explicit Scope(Kernel k) : k_(k), on_(enabled.load(std::memory_order_relaxed)) {
    if (on_) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (!on_) return;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_);
    nanoseconds[k_].fetch_add(ns.count(), std::memory_order_relaxed);
    calls[k_].fetch_add(1, std::memory_order_relaxed);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Kernel k_;
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace singan_timing
