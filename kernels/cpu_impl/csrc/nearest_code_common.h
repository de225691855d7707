// Declarations shared by the Python binding and the per-instruction-set kernels.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include "thread_pool.h"

enum { SEARCH_OK = 0, SEARCH_OUT_OF_MEMORY = 1 };

// index [n] (int64) and distance [n] (fp32) of the nearest code (see nearest_code_kernel.h) for x [n, d]
// and codes [k, d], all C-contiguous fp32, l2 or (`cosine`) l2 between normalised vectors, on `threads`
// threads. Returns SEARCH_OK or SEARCH_OUT_OF_MEMORY.
int nearest_code_avx512(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine,
                        int64_t* index, float* distance, int threads);
int nearest_code_avx2(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine,
                      int64_t* index, float* distance, int threads);
