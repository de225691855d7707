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

// When the kernels track the code vector of each lane's minimum (PER_VECTOR: a compare per vector,
// cheap next to D >= 32 FMAs, and no recomputation at the end, which pays off when the codebook is small)
// rather than the block (see nearest_code_kernel.h). Measured on an AMD EPYC (5 interleaved runs): per
// vector at K = 1024 took 0.6-0.9 of the per-block time at D = 4..256; per block at K = 16384 took
// 0.75-0.92 of the per-vector time at D = 4..16.
constexpr int64_t PER_VECTOR_FROM_D = 32;
constexpr int64_t PER_VECTOR_UP_TO_K = 4096;

// index [n] (int64) and distance [n] (fp32) of the nearest code (see nearest_code_kernel.h) for x [n, d]
// and codes [k, d], all C-contiguous fp32, l2 or (`cosine`) l2 between normalised vectors, on `threads`
// threads. Returns SEARCH_OK or SEARCH_OUT_OF_MEMORY.
int nearest_code_avx512(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine,
                        int64_t* index, float* distance, int threads);
int nearest_code_avx2(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine,
                      int64_t* index, float* distance, int threads);
