// The nearest-code kernel for CPUs with AVX-512F: 16 fp32 lanes, tiles of 4 rows x 64 codes (the fastest
// of the tiles tried on an AMD EPYC, see benchmarks/RESULTS.md); blocks of 2 groups where the codebook is
// large and D small (nearest_code_common.h).
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "nearest_code_common.h"

namespace {
#define KERNEL_TARGET __attribute__((target("avx2,fma,avx512f,avx512dq")))
struct Avx512 {
    using V = __m512;
    using I = __m512i;
    static constexpr int W = 16;
    KERNEL_TARGET static V load(const float* p) { return _mm512_loadu_ps(p); }
    KERNEL_TARGET static I load_int(const int32_t* p) { return _mm512_loadu_si512(p); }
    KERNEL_TARGET static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    KERNEL_TARGET static void store_int(int32_t* p, I v) { _mm512_storeu_si512(p, v); }
    KERNEL_TARGET static V broadcast(float f) { return _mm512_set1_ps(f); }
    KERNEL_TARGET static I broadcast_int(int32_t i) { return _mm512_set1_epi32(i); }
    KERNEL_TARGET static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    KERNEL_TARGET static V min(V a, V b) { return _mm512_min_ps(a, b); }
    KERNEL_TARGET static float reduce_min(V a) { return _mm512_reduce_min_ps(a); }
    KERNEL_TARGET static uint32_t lanes_equal(V a, float x) {
        return _mm512_cmp_ps_mask(a, _mm512_set1_ps(x), _CMP_EQ_OQ);
    }
    // Lanes where m < best (false for NaN) take m and the block `here`.
    KERNEL_TARGET static void keep_smaller(V& best, I& block, V m, I here) {
        __mmask16 smaller = _mm512_cmp_ps_mask(m, best, _CMP_LT_OQ);
        best = _mm512_mask_mov_ps(best, smaller, m);
        block = _mm512_mask_mov_epi32(block, smaller, here);
    }
};
#include "nearest_code_kernel.h"
}  // namespace

int nearest_code_avx512(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine,
                        int64_t* index, float* distance, int threads) {
    if (d >= PER_VECTOR_FROM_D || k <= PER_VECTOR_UP_TO_K)
        return search<Avx512, 4, 4, 1, true>(x, n, codes, k, d, cosine, index, distance, threads);
    return search<Avx512, 4, 4, 2, false>(x, n, codes, k, d, cosine, index, distance, threads);
}
#endif
