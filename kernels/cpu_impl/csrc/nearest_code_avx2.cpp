// The nearest-code kernel for CPUs with AVX2 and FMA: 8 fp32 lanes, tiles of 3 rows x 16 codes (the
// tile, its per-lane state and the loaded codes fit the 16 ymm registers); blocks of one
// group where the codebook is large and D small (nearest_code_common.h).
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "nearest_code_common.h"

namespace {
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
struct Avx2 {
    using V = __m256;
    using I = __m256i;
    static constexpr int W = 8;
    KERNEL_TARGET static V load(const float* p) { return _mm256_loadu_ps(p); }
    KERNEL_TARGET static I load_int(const int32_t* p) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    }
    KERNEL_TARGET static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    KERNEL_TARGET static void store_int(int32_t* p, I v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
    }
    KERNEL_TARGET static V broadcast(float f) { return _mm256_set1_ps(f); }
    KERNEL_TARGET static I broadcast_int(int32_t i) { return _mm256_set1_epi32(i); }
    KERNEL_TARGET static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    KERNEL_TARGET static V min(V a, V b) { return _mm256_min_ps(a, b); }
    KERNEL_TARGET static float reduce_min(V a) {
        __m128 m = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_min_ps(m, _mm_movehl_ps(m, m));
        return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
    }
    KERNEL_TARGET static uint32_t lanes_equal(V a, float x) {
        return _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(x), _CMP_EQ_OQ));
    }
    // Lanes where m < best (false for NaN) take m and the block `here`.
    KERNEL_TARGET static void keep_smaller(V& best, I& block, V m, I here) {
        V smaller = _mm256_cmp_ps(m, best, _CMP_LT_OQ);
        best = _mm256_blendv_ps(best, m, smaller);
        block = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(block), _mm256_castsi256_ps(here), smaller));
    }
};
#include "nearest_code_kernel.h"
}  // namespace

int nearest_code_avx2(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine,
                      int64_t* index, float* distance, int threads) {
    if (d >= PER_VECTOR_FROM_D || k <= PER_VECTOR_UP_TO_K)
        return search<Avx2, 3, 2, 1, true>(x, n, codes, k, d, cosine, index, distance, threads);
    return search<Avx2, 3, 2, 1, false>(x, n, codes, k, d, cosine, index, distance, threads);
}
#endif
