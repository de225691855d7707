// Fused nearest-code search on the CPU, written once for any SIMD width and included by one source
// file per instruction set, inside an anonymous namespace, after defining KERNEL_TARGET (the function
// attribute enabling that instruction set). Only tile() and finish() carry it: everything else, and
// every library template they use, is compiled for the baseline CPU, so the one copy of a shared
// template the linker keeps can never hold instructions another machine lacks.
//
// Math. For a query x and code e_k: argmin_k ||x - e_k||^2 = argmin_k s_k(x) with
//     s_k(x) = ||e_k||^2 + sum_j x_j * (-2 e_kj),
// evaluated in fp32 as a chain of fused multiply-adds in the order j = 0, 1, ..., D-1, starting from
// ||e_k||^2; the distance reported is max(0, ||x||^2 + min_k s_k(x)). With `cosine`, rows and codes are
// first divided by max(||.||, 1e-12) (as torch.nn.functional.normalize does), inside the kernel.
//
// Layout. Codes are packed once per call into groups of G = NV * W codes (W SIMD lanes, NV vectors):
// pack[g][j][0..G) holds -2 e_kj for the group's codes, norms[g][0..G) their ||e_k||^2 (+inf for the
// padding past K, which therefore never wins). One register tile is R queries x G codes: per channel j,
// NV code vectors are loaded and each query's x_j is broadcast into NV FMAs.
//
// Running minimum. Each query keeps, per lane, the smallest s seen (best[]) and where it was first
// seen (block[]); a lane's codes are visited in increasing index order and updates use strict <, so
// the earliest code keeps a tie. Two ways to track "where", chosen by D (see the per-ISA files):
// - PER_VECTOR (large D, where a compare per code vector is cheap next to its D FMAs): block[] holds the
//   code vector's number, and code = vector * W + lane.
// - per block (small D, where that compare would cost as much as the FMAs): groups are taken S at a
//   time; inside a block only a lane-wise minimum is taken (one `min` per code vector), compared with
//   best[] once per block. The index is recovered at the end by recomputing s for the S * NV candidate
//   codes of the lane, in code order (the same FMA chain gives the same bits): the first match.
// The row's minimum is the smallest lane value; over the lanes holding it the lowest code index wins:
// ties go to the lowest code index, as on every other path.
//
// A row whose minimum is not finite (NaN/Inf in the row, or every s overflowing fp32) gets index -1
// and that minimum as its distance; the Python caller sorts those out.
//
// Work split: rows are cut into blocks handed out through an atomic counter, so a thread slowed by
// another process simply takes fewer blocks; each row is computed by one thread in a fixed order, so
// results do not depend on the number of threads. The codebook is walked in chunks (whole blocks) whose
// packed panel stays in the core's L2 cache while every row tile of the row block passes over it.

template <class T, int R, int NV, int S, bool PER_VECTOR>
struct NearestCode {
    static_assert(!PER_VECTOR || S == 1, "per-vector tracking visits one group at a time");
    using V = typename T::V;
    using I = typename T::I;
    static constexpr int W = T::W;
    static constexpr int G = NV * W;

    const float* pack;
    const float* norms;
    int64_t d;
    int64_t groups;

    // One tile of R rows (xt: R x d, row-major) over groups [g0, g1) (g0 a multiple of S); per-row lane
    // state in best / block (W entries per row).
    KERNEL_TARGET void tile(const float* xt, int64_t g0, int64_t g1, float* best, int32_t* block) const {
        V lane_best[R];
        I lane_block[R];
        for (int r = 0; r < R; ++r) {
            lane_best[r] = T::load(best + r * W);
            lane_block[r] = T::load_int(block + r * W);
        }
        for (int64_t b0 = g0; b0 < g1; b0 += S) {
            const int64_t b1 = std::min(g1, b0 + S);
            V block_min[R];  // operands ordered so a NaN distance (an overflowing code) is passed over
            for (int r = 0; r < R; ++r) block_min[r] = T::broadcast(std::numeric_limits<float>::infinity());
            for (int64_t g = b0; g < b1; ++g) {
                const float* panel = pack + g * d * G;
                V acc[R][NV];
                for (int v = 0; v < NV; ++v) {
                    V norm = T::load(norms + g * G + v * W);
                    for (int r = 0; r < R; ++r) acc[r][v] = norm;
                }
                for (int64_t j = 0; j < d; ++j) {
                    V code[NV];
                    for (int v = 0; v < NV; ++v) code[v] = T::load(panel + j * G + v * W);
                    for (int r = 0; r < R; ++r) {
                        V xj = T::broadcast(xt[r * d + j]);
                        for (int v = 0; v < NV; ++v) acc[r][v] = T::fma(xj, code[v], acc[r][v]);
                    }
                }
                for (int r = 0; r < R; ++r) {
                    for (int v = 0; v < NV; ++v) {
                        if constexpr (PER_VECTOR)
                            T::keep_smaller(lane_best[r], lane_block[r], acc[r][v],
                                            T::broadcast_int(static_cast<int32_t>(g * NV + v)));
                        else
                            block_min[r] = T::min(acc[r][v], block_min[r]);
                    }
                }
            }
            if constexpr (!PER_VECTOR) {
                I here = T::broadcast_int(static_cast<int32_t>(b0 / S));
                for (int r = 0; r < R; ++r) T::keep_smaller(lane_best[r], lane_block[r], block_min[r], here);
            }
        }
        for (int r = 0; r < R; ++r) {
            T::store(best + r * W, lane_best[r]);
            T::store_int(block + r * W, lane_block[r]);
        }
    }

    // The lowest code index reaching the row's minimum (-1 when the minimum is not finite) and the distance.
    KERNEL_TARGET void finish(const float* x, const float* best, const int32_t* block, int64_t* index,
                              float* distance) const {
        const V lanes = T::load(best);
        const float lowest = T::reduce_min(lanes);
        int64_t found = -1;
        if (std::isfinite(lowest)) {
            for (uint32_t holding = T::lanes_equal(lanes, lowest); holding != 0; holding &= holding - 1) {
                const int l = __builtin_ctz(holding);
                const int64_t code = PER_VECTOR ? int64_t{block[l]} * W + l : recover(x, block[l], l, lowest);
                found = (found < 0 || code < found) ? code : found;
            }
        }
        float partial[8] = {};  // ||x||^2 in eight interleaved sums (short dependency chains)
        for (int64_t j = 0; j < d; ++j) partial[j % 8] += x[j] * x[j];
        float squared = 0.f;
        for (float p : partial) squared += p;
        *index = found;
        *distance = found < 0 ? lowest : std::max(0.f, squared + lowest);
    }

    // Per-block tracking: the first of lane l's S * NV candidate codes in `block` whose s equals
    // `lowest`, recomputed side by side (independent FMA chains: one chain's latency, not S * NV).
    KERNEL_TARGET int64_t recover(const float* x, int32_t block, int l, float lowest) const {
        int64_t code[S * NV], offset[S * NV];
        float s[S * NV];
        int count = 0;
        const int64_t first = int64_t{block} * S;
        for (int64_t g = first; g < std::min(groups, first + S); ++g) {
            for (int v = 0; v < NV; ++v, ++count) {
                code[count] = g * G + v * W + l;
                offset[count] = g * d * G + v * W + l;
                s[count] = norms[code[count]];
            }
        }
        for (int64_t j = 0; j < d; ++j)
            for (int c = 0; c < count; ++c) s[c] = __builtin_fmaf(x[j], pack[offset[c] + j * G], s[c]);
        for (int c = 0; c < count; ++c)
            if (s[c] == lowest) return code[c];
        return -1;  // unreachable: the minimum came from one of these codes
    }
};

// max(||v||, 1e-12) for a row v of d floats (what a row is divided by when normalised).
inline float clamped_norm(const float* v, int64_t d) {
    float squared = 0.f;
    for (int64_t j = 0; j < d; ++j) squared += v[j] * v[j];
    return std::max(std::sqrt(squared), 1e-12f);
}

// Packs codes [k, d] (divided by their norms when `cosine`) into `pack` / `norms` (see the layout
// above), groups [g0, g1).
template <int G>
void pack_codes(const float* codes, int64_t k, int64_t d, bool cosine, int64_t g0, int64_t g1, float* pack,
                float* norms) {
    for (int64_t g = g0; g < g1; ++g) {
        for (int col = 0; col < G; ++col) {
            const int64_t code = g * G + col;
            const float scale = code < k && cosine ? clamped_norm(codes + code * d, d) : 1.f;
            float squared = 0.f;
            for (int64_t j = 0; j < d; ++j) {
                const float e = code < k ? codes[code * d + j] / scale : 0.f;
                pack[(g * d + j) * G + col] = -2.f * e;
                squared += e * e;
            }
            norms[g * G + col] = code < k ? squared : std::numeric_limits<float>::infinity();
        }
    }
}

template <class T, int R, int NV, int S, bool PER_VECTOR>
int search(const float* x, int64_t n, const float* codes, int64_t k, int64_t d, bool cosine, int64_t* index,
           float* distance, int threads) {
    using Kernel = NearestCode<T, R, NV, S, PER_VECTOR>;
    constexpr int W = T::W, G = Kernel::G;
    const int64_t groups = (k + G - 1) / G;
    std::unique_ptr<float[]> pack(new (std::nothrow) float[groups * d * G + 1]);
    std::unique_ptr<float[]> norms(new (std::nothrow) float[groups * G]);
    if (!pack || !norms) return SEARCH_OUT_OF_MEMORY;
    const int packers = static_cast<int>(std::min<int64_t>(threads, groups));
    ThreadPool::instance().run(packers, [&](int t) {
        const int64_t per = (groups + packers - 1) / packers;
        pack_codes<G>(codes, k, d, cosine, std::min(groups, t * per), std::min(groups, (t + 1) * per),
                      pack.get(), norms.get());
    });
    const Kernel kernel{pack.get(), norms.get(), d, groups};

    // Codebook chunk: its packed panel (chunk_groups * d * G floats) fits in about 256 KiB of L2.
    const int64_t chunk_groups = std::max<int64_t>(1, (256 << 10) / (4 * d * G * S)) * S;
    // Row blocks: at most 256 rows, and at least 8 blocks per thread when there are rows enough.
    const int64_t block_rows = std::max<int64_t>(R, std::min<int64_t>(256, n / (8 * threads) / R * R));
    const int64_t blocks = (n + block_rows - 1) / block_rows;
    std::atomic<int64_t> next_block{0};
    ThreadPool::instance().run(static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, blocks))), [&](int) {
        std::vector<float> padded(R * d);  // the last, partial tile of a block, its last row repeated
        std::vector<float> normalised(cosine ? block_rows * d : 0);
        std::vector<float> best((block_rows + R) * W);
        std::vector<int32_t> block((block_rows + R) * W);
        for (int64_t b = next_block++; b < blocks; b = next_block++) {
            const int64_t r0 = b * block_rows, m = std::min(n, r0 + block_rows) - r0;
            const float* rows = x + r0 * d;  // the block's m rows
            if (cosine) {
                for (int64_t r = 0; r < m; ++r) {
                    const float norm = clamped_norm(rows + r * d, d);
                    for (int64_t j = 0; j < d; ++j) normalised[r * d + j] = rows[r * d + j] / norm;
                }
                rows = normalised.data();
            }
            std::fill(best.begin(), best.end(), std::numeric_limits<float>::infinity());
            std::fill(block.begin(), block.end(), 0);
            for (int64_t g0 = 0; g0 < groups; g0 += chunk_groups) {
                const int64_t g1 = std::min(groups, g0 + chunk_groups);
                for (int64_t a = 0; a < m; a += R) {
                    const float* tile = rows + a * d;
                    if (a + R > m) {
                        for (int r = 0; r < R; ++r)
                            std::memcpy(&padded[r * d], rows + std::min(a + r, m - 1) * d, sizeof(float) * d);
                        tile = padded.data();
                    }
                    kernel.tile(tile, g0, g1, &best[a * W], &block[a * W]);
                }
            }
            for (int64_t r = 0; r < m; ++r)
                kernel.finish(rows + r * d, &best[r * W], &block[r * W], index + r0 + r, distance + r0 + r);
        }
    });
    return SEARCH_OK;
}
