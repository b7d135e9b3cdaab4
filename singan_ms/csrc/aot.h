// Helpers shared by the MindSpore AOT entry points of kernels.cc and conv.cc.
#pragma once

#include <cstring>

// Whether the first n of an AOT call's dtype names are float32 (MindSpore spells it "float32" or "float").
inline bool all_float32(int n, const char** dtypes) {
  for (int i = 0; i < n; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0 && std::strcmp(dtypes[i], "float") != 0) return false;
  return true;
}
