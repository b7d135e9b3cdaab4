// Helpers shared by the MindSpore AOT entry points of kernels.cc and conv.cc.
#pragma once

#include <cstdint>
#include <cstring>

// Whether the first n of an AOT call's dtype names are float32 (MindSpore spells it "float32" or "float").
inline bool all_float32(int n, const char** dtypes) {
  for (int i = 0; i < n; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0 && std::strcmp(dtypes[i], "float") != 0) return false;
  return true;
}

// Number of elements of a tensor of `ndim` dimensions `shape`.
inline int64_t numel(int ndim, const int64_t* shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

// Whether AOT parameters a and b have the same shape.
inline bool same_shape(int* ndims, int64_t** shapes, int a, int b) {
  if (ndims[a] != ndims[b]) return false;
  for (int d = 0; d < ndims[a]; ++d)
    if (shapes[a][d] != shapes[b][d]) return false;
  return true;
}
