// attention.cu: attention with prefix keys, flash-attention style; the scalar path (any GPU,
// f32/bf16/f16, and the host shim). The tensor-core path is attention_mma.cu.
//
// Computes, for every sequence b, query head h and query t:
//   out[t] = sum_j softmax_j(scale * q_t . key_j + mask) * keep(h, t, j) * value_j
// over the keys j of [prefix ; sequence b]: the P prefix keys/values (trainable, shared by
// every sequence, visible to every query) then the sequence's own keys. A sequence key is
// hidden when the key mask says padding, or, if causal, when j > t + nk - nq (the causal mask
// aligned bottom-right, so that with more keys than queries the last query sees all). A query
// that sees no key outputs zeros (and lse = -inf). Query head h reads key/value head
// h / (heads / kv_heads) (grouped-query attention). keep() is the attention-probability
// dropout factor (0 or 1 / (1 - p)) from the counter RNG, bit-identical to the CPU's, so both
// drop the same probabilities; the softmax normaliser is that of the undropped scores.
// Layouts (row-major; AttnParams in attention_common.cuh): q, out [q_rows, heads * D];
// k, v [kv_rows, kv_heads * D]; pk, pv [P, kv_heads * D]; lse f32 [heads, q_rows]. Sequence b
// owns query rows q_off[b]..q_off[b+1] and key rows k_off[b]..k_off[b+1]: packed
// variable-length sequences, or a padded batch (offsets b * T) with a key mask. This is
// engine/cpu/attention (SeqLayout) exactly; that module is the reference the tests use.
// Elements T = f32/bf16/f16, all arithmetic in f32. D = 32, 64, 128 (template parameter).
//
// Forward: per block BQ queries of one (sequence, head); key/value tiles of BK rows stream
// through shared memory with an online softmax (running max and sum rescale the partial
// output), so the score matrix never exists; the log-sum-exp is saved. out, lse OVERWRITTEN.
// Backward (recomputes probabilities from lse, as flash-attention):
//   delta[h, t] = dO_t . O_t                                         (attn_bwd_delta)
//   dS = P * (keep * dO V^T - delta) * scale; dQ = dS K               (attn_bwd_dq)
//   dV_j = sum_t P keep dO_t; dK_j = sum_t dS q_t                     (attn_bwd_dkdv)
// dQ, dK, dV are activation gradients, OVERWRITTEN (rows of empty sequences become zero).
// dPK, dPV (prefix, f32) are parameter gradients summed over the batch and ACCUMULATED: in
// deterministic mode each sequence writes its own partial (part_k, part_v) and reduce.cu's
// colsum_accumulate adds them in sequence order; otherwise atomics add into dpk, dpv directly.
//
// Scalar path design (every kernel: 128 threads, 4 warps). A thread never holds a whole row of
// D floats: per key tile the block computes the BQ x BK scores (and, backward, dO . v) into
// shared memory, each thread a few (query, key) pairs spread so that a warp reads 32 different
// rows of one operand (padded stride D + 1: 32 banks) and one row of the other (a broadcast);
// then each thread updates a few elements of the output tile, the 32 lanes of a warp taking 32
// consecutive columns of one row. So each thread holds BQ * BK / 128 scores and BQ * D / 128
// accumulators (at most 32 + 32 floats), all indexed by compile-time constants after
// unrolling: no local memory for any D on sm_80 or sm_90 (build.rs fails the build otherwise).
// Tiles are f32 in shared memory, sized to stay under the 48 KB of static shared memory (the
// host shim needs static sizes). The forward's softmax update (running max, sum, rescale
// factor) is one thread per query row between two barriers.
#include "attention_common.cuh"

#define ATT_NT 128  // threads per block of every scalar attention kernel

// Block shapes by head dimension. Shared memory (f32): forward (BQ + BK) (D + 1) + BK D + BQ
// (BK + 1); dQ 2 (BQ + BK) (D + 1) + BQ (BK + 1); dK/dV 2 (BK + BQ) (D + 1) + 2 BK (BQ + 1).
template <int D> struct FwdCfg;  // BQ queries per block, BK keys per tile
template <> struct FwdCfg<32> { static const int BQ = 64, BK = 32; };
template <> struct FwdCfg<64> { static const int BQ = 32, BK = 32; };
template <> struct FwdCfg<128> { static const int BQ = 16, BK = 32; };
template <int D> struct DqCfg;  // BQ queries per block, BK keys per tile
template <> struct DqCfg<32> { static const int BQ = 64, BK = 32; };
template <> struct DqCfg<64> { static const int BQ = 32, BK = 32; };
template <> struct DqCfg<128> { static const int BQ = 16, BK = 16; };
template <int D> struct DkvCfg;  // BK keys per block, BQ queries per tile
template <> struct DkvCfg<32> { static const int BK = 64, BQ = 32; };
template <> struct DkvCfg<64> { static const int BK = 32, BQ = 32; };
template <> struct DkvCfg<128> { static const int BK = 16, BQ = 16; };

// Element c of key (or value) row j of [prefix ; sequence] for kv head g, as f32; 0 past L.
template <typename T, int D>
__device__ __forceinline__ float kv_elem(const AttnParams& P, const void* pre, const void* seq, int k0, int L, int g,
                                         int j, int c) {
    long long kvs = (long long)P.kv_heads * D;
    if (j < P.prefix) return to_f32(((const T*)pre)[j * kvs + g * D + c]);
    if (j < L) return to_f32(((const T*)seq)[(long long)(k0 + j - P.prefix) * kvs + g * D + c]);
    return 0.0f;
}

// Rows j0 .. j0 + ROWS of [prefix ; sequence] (keys or values) into dst (row stride S).
template <typename T, int D, int ROWS, int S>
__device__ __forceinline__ void load_kv_tile(float* dst, const AttnParams& P, const void* pre, const void* seq, int k0,
                                             int L, int g, int j0) {
    for (int i = threadIdx.x; i < ROWS * D; i += ATT_NT) {
        int r = i / D, c = i % D;
        dst[r * S + c] = kv_elem<T, D>(P, pre, seq, k0, L, g, j0 + r, c);
    }
}

// Query-side rows t0 .. t0 + ROWS (local to the sequence) of head h of src ([q_rows, heads *
// D]) into dst (row stride S), zeros past nq.
template <typename T, int D, int ROWS, int S>
__device__ __forceinline__ void load_q_tile(float* dst, const AttnParams& P, const void* src, int q0, int nq, int h,
                                            int t0) {
    const long long qs = (long long)P.heads * D;
    for (int i = threadIdx.x; i < ROWS * D; i += ATT_NT) {
        int r = i / D, c = i % D, t = t0 + r;
        dst[r * S + c] = t < nq ? to_f32(((const T*)src)[(long long)(q0 + t) * qs + h * D + c]) : 0.0f;
    }
}

// ---- kernels: forward ---------------------------------------------------------------------------
template <typename T, int D>
__device__ __forceinline__ void attn_fwd_scalar(const AttnParams& P) {
    constexpr int BQ = FwdCfg<D>::BQ, BK = FwdCfg<D>::BK;
    constexpr int NS = BQ * BK / ATT_NT, NO = BQ * D / ATT_NT;  // scores, outputs per thread
    __shared__ float sQ[BQ][D + 1];
    __shared__ float sK[BK][D + 1];
    __shared__ float sV[BK][D];
    __shared__ float sP[BQ][BK + 1];  // scores, then probabilities
    __shared__ float sCorr[BQ];       // per row: the rescale factor of this tile, then 1 / sum
    const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x, tid = threadIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    if (tile * BQ >= nq) return;  // the whole block: before any barrier
    const int g = h / (P.heads / P.kv_heads), L = P.prefix + nk, t0 = tile * BQ;
    load_q_tile<T, D, BQ, D + 1>(&sQ[0][0], P, P.q, q0, nq, h, t0);
    float o[NO];
#pragma unroll
    for (int n = 0; n < NO; n++) o[n] = 0.0f;
    float m = -PA_INFINITY, l = 0.0f;  // running max and sum of row tid (threads tid < BQ)
    for (int kt = 0; kt < L; kt += BK) {
        __syncthreads();  // the previous tile is consumed (and, the first time, sQ is written)
        load_kv_tile<T, D, BK, D + 1>(&sK[0][0], P, P.pk, P.k, k0, L, g, kt);
        load_kv_tile<T, D, BK, D>(&sV[0][0], P, P.pv, P.v, k0, L, g, kt);
        __syncthreads();
        // Scores of pairs tid + n * 128 (row e / BK, key e % BK), masked and scaled.
        float s[NS];
#pragma unroll
        for (int n = 0; n < NS; n++) s[n] = 0.0f;
#pragma unroll 4
        for (int c = 0; c < D; c++) {
#pragma unroll
            for (int n = 0; n < NS; n++) {
                const int e = tid + n * ATT_NT;
                s[n] += sQ[e / BK][c] * sK[e % BK][c];
            }
        }
#pragma unroll
        for (int n = 0; n < NS; n++) {
            const int e = tid + n * ATT_NT, i = e / BK, jj = e % BK;
            sP[i][jj] = attn_sees(P, k0, nq, nk, L, t0 + i, kt + jj) ? s[n] * P.scale : -PA_INFINITY;
        }
        __syncthreads();
        // Online softmax, one thread per row: the new max, the rescale factor of what was
        // summed so far, and the tile's probabilities (undropped into the sum, dropped into sP).
        if (tid < BQ) {
            float mt = -PA_INFINITY;
            for (int jj = 0; jj < BK; jj++) mt = fmaxf(mt, sP[tid][jj]);
            const float mn = fmaxf(m, mt);
            const float corr = mn == -PA_INFINITY ? 1.0f : expf(m - mn);  // exp(-inf) = 0 at first
            l *= corr;
            for (int jj = 0; jj < BK; jj++) {
                const float sv = sP[tid][jj];
                const float p = sv == -PA_INFINITY ? 0.0f : expf(sv - mn);
                l += p;
                sP[tid][jj] = p == 0.0f ? 0.0f : p * attn_keep(P, h, q0 + t0 + tid, kt + jj);
            }
            m = mn;
            sCorr[tid] = corr;
        }
        __syncthreads();
        // O = O * corr + P V for elements tid + n * 128 (row e / D, column e % D).
#pragma unroll
        for (int n = 0; n < NO; n++) o[n] *= sCorr[(tid + n * ATT_NT) / D];
        for (int jj = 0; jj < BK; jj++) {
#pragma unroll
            for (int n = 0; n < NO; n++) {
                const int e = tid + n * ATT_NT;
                o[n] += sP[e / D][jj] * sV[jj][e % D];
            }
        }
    }
    __syncthreads();  // sCorr of the last tile is consumed
    if (tid < BQ) {
        const int t = t0 + tid;
        sCorr[tid] = l > 0.0f ? 1.0f / l : 0.0f;
        if (t < nq) P.lse[(long long)h * P.q_rows + q0 + t] = l > 0.0f ? m + logf(l) : -PA_INFINITY;
    }
    __syncthreads();
    const long long qs = (long long)P.heads * D;
#pragma unroll
    for (int n = 0; n < NO; n++) {
        const int e = tid + n * ATT_NT, i = e / D, c = e % D, t = t0 + i;
        if (t < nq) ((T*)P.out)[(long long)(q0 + t) * qs + h * D + c] = from_f32<T>(o[n] * sCorr[i]);
    }
}

// ---- kernels: backward ----------------------------------------------------------------------------
// delta = rowsum(dO * O) per (query row, head): one thread each.
template <typename T>
__device__ __forceinline__ void attn_bwd_delta(const AttnParams& P) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)P.q_rows * P.heads) return;
    int row = (int)(i / P.heads), h = (int)(i % P.heads), D = P.head_dim;
    long long off = (long long)row * P.heads * D + (long long)h * D;
    const T* o = (const T*)P.out + off;
    const T* go = (const T*)P.dout + off;
    float s = 0.0f;
    for (int c = 0; c < D; c++) s += to_f32(o[c]) * to_f32(go[c]);
    P.delta[(long long)h * P.q_rows + row] = s;
}

// dQ for BQ queries of one (sequence, head), key tiles streamed as in the forward: per tile
// dS (BQ x BK) into shared memory, then dQ += dS K.
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_dq_scalar(const AttnParams& P) {
    constexpr int BQ = DqCfg<D>::BQ, BK = DqCfg<D>::BK;
    constexpr int NS = BQ * BK / ATT_NT, NO = BQ * D / ATT_NT;
    __shared__ float sQ[BQ][D + 1];
    __shared__ float sdO[BQ][D + 1];
    __shared__ float sK[BK][D + 1];
    __shared__ float sV[BK][D + 1];
    __shared__ float sdS[BQ][BK + 1];
    __shared__ float sL[BQ];
    __shared__ float sDl[BQ];
    const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x, tid = threadIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    if (tile * BQ >= nq) return;
    const int g = h / (P.heads / P.kv_heads), L = P.prefix + nk, t0 = tile * BQ;
    load_q_tile<T, D, BQ, D + 1>(&sQ[0][0], P, P.q, q0, nq, h, t0);
    load_q_tile<T, D, BQ, D + 1>(&sdO[0][0], P, P.dout, q0, nq, h, t0);
    for (int i = tid; i < BQ; i += ATT_NT) {
        const int t = t0 + i;
        // A query that sees no key (lse = -inf) gets dq = 0, as one past nq.
        sL[i] = t < nq ? P.lse[(long long)h * P.q_rows + q0 + t] : -PA_INFINITY;
        sDl[i] = t < nq ? P.delta[(long long)h * P.q_rows + q0 + t] : 0.0f;
    }
    float dq[NO];
#pragma unroll
    for (int n = 0; n < NO; n++) dq[n] = 0.0f;
    for (int kt = 0; kt < L; kt += BK) {
        __syncthreads();
        load_kv_tile<T, D, BK, D + 1>(&sK[0][0], P, P.pk, P.k, k0, L, g, kt);
        load_kv_tile<T, D, BK, D + 1>(&sV[0][0], P, P.pv, P.v, k0, L, g, kt);
        __syncthreads();
        float s[NS], dp[NS];
#pragma unroll
        for (int n = 0; n < NS; n++) s[n] = dp[n] = 0.0f;
#pragma unroll 4
        for (int c = 0; c < D; c++) {
#pragma unroll
            for (int n = 0; n < NS; n++) {
                const int e = tid + n * ATT_NT, i = e / BK, jj = e % BK;
                s[n] += sQ[i][c] * sK[jj][c];
                dp[n] += sdO[i][c] * sV[jj][c];
            }
        }
#pragma unroll
        for (int n = 0; n < NS; n++) {
            const int e = tid + n * ATT_NT, i = e / BK, jj = e % BK, j = kt + jj, t = t0 + i;
            float ds = 0.0f;
            if (sL[i] != -PA_INFINITY && attn_sees(P, k0, nq, nk, L, t, j)) {
                const float p = expf(s[n] * P.scale - sL[i]);
                ds = p * (attn_keep(P, h, q0 + t, j) * dp[n] - sDl[i]) * P.scale;
            }
            sdS[i][jj] = ds;
        }
        __syncthreads();
        for (int jj = 0; jj < BK; jj++) {
#pragma unroll
            for (int n = 0; n < NO; n++) {
                const int e = tid + n * ATT_NT;
                dq[n] += sdS[e / D][jj] * sK[jj][e % D];
            }
        }
    }
    if (!P.dq) return;
    const long long qs = (long long)P.heads * D;
#pragma unroll
    for (int n = 0; n < NO; n++) {
        const int e = tid + n * ATT_NT, t = t0 + e / D;
        if (t < nq) ((T*)P.dq)[(long long)(q0 + t) * qs + h * D + e % D] = from_f32<T>(dq[n]);
    }
}

// dK and dV for BK key rows of [prefix ; sequence b] and kv head g, summed over the query heads
// of its group and the sequence's queries, which stream through shared memory in tiles of BQ
// with their lse and delta: per tile P keep and dS (BK x BQ) into shared memory, then
// dV += (P keep) dO and dK += dS Q.
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_dkdv_scalar(const AttnParams& P) {
    constexpr int BK = DkvCfg<D>::BK, BQ = DkvCfg<D>::BQ;
    constexpr int NS = BK * BQ / ATT_NT, NO = BK * D / ATT_NT;
    __shared__ float sK[BK][D + 1];
    __shared__ float sV[BK][D + 1];
    __shared__ float sQ[BQ][D + 1];
    __shared__ float sdO[BQ][D + 1];
    __shared__ float sPk[BK][BQ + 1];  // probability times the dropout factor
    __shared__ float sdS[BK][BQ + 1];
    __shared__ float sL[BQ];
    __shared__ float sDl[BQ];
    const int b = blockIdx.z, g = blockIdx.y, tile = blockIdx.x, tid = threadIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    const int L = P.prefix + nk, j0 = tile * BK;
    if (j0 >= L) return;
    load_kv_tile<T, D, BK, D + 1>(&sK[0][0], P, P.pk, P.k, k0, L, g, j0);
    load_kv_tile<T, D, BK, D + 1>(&sV[0][0], P, P.pv, P.v, k0, L, g, j0);
    float dk[NO], dv[NO];
#pragma unroll
    for (int n = 0; n < NO; n++) dk[n] = dv[n] = 0.0f;
    const int rep = P.heads / P.kv_heads;
    for (int r = 0; r < rep; r++) {
        const int h = g * rep + r;
        for (int qt = 0; qt < nq; qt += BQ) {
            __syncthreads();  // the previous tile is consumed (and, the first time, sK, sV written)
            load_q_tile<T, D, BQ, D + 1>(&sQ[0][0], P, P.q, q0, nq, h, qt);
            load_q_tile<T, D, BQ, D + 1>(&sdO[0][0], P, P.dout, q0, nq, h, qt);
            for (int i = tid; i < BQ; i += ATT_NT) {
                const int t = qt + i;
                sL[i] = t < nq ? P.lse[(long long)h * P.q_rows + q0 + t] : -PA_INFINITY;
                sDl[i] = t < nq ? P.delta[(long long)h * P.q_rows + q0 + t] : 0.0f;
            }
            __syncthreads();
            // Pairs tid + n * 128: key e / BQ, query e % BQ (a warp spans queries: sQ rows).
            float s[NS], dp[NS];
#pragma unroll
            for (int n = 0; n < NS; n++) s[n] = dp[n] = 0.0f;
#pragma unroll 4
            for (int c = 0; c < D; c++) {
#pragma unroll
                for (int n = 0; n < NS; n++) {
                    const int e = tid + n * ATT_NT, jj = e / BQ, i = e % BQ;
                    s[n] += sK[jj][c] * sQ[i][c];
                    dp[n] += sV[jj][c] * sdO[i][c];
                }
            }
#pragma unroll
            for (int n = 0; n < NS; n++) {
                const int e = tid + n * ATT_NT, jj = e / BQ, i = e % BQ, j = j0 + jj, t = qt + i;
                float pk = 0.0f, ds = 0.0f;
                if (sL[i] != -PA_INFINITY && attn_sees(P, k0, nq, nk, L, t, j)) {
                    const float p = expf(s[n] * P.scale - sL[i]), keep = attn_keep(P, h, q0 + t, j);
                    pk = p * keep;
                    ds = p * (keep * dp[n] - sDl[i]) * P.scale;
                }
                sPk[jj][i] = pk;
                sdS[jj][i] = ds;
            }
            __syncthreads();
            // Elements tid + n * 128 of the key tile's gradients: key e / D, column e % D.
            for (int i = 0; i < BQ; i++) {
#pragma unroll
                for (int n = 0; n < NO; n++) {
                    const int e = tid + n * ATT_NT, jj = e / D, c = e % D;
                    dv[n] += sPk[jj][i] * sdO[i][c];
                    dk[n] += sdS[jj][i] * sQ[i][c];
                }
            }
        }
    }
    const long long kvs = (long long)P.kv_heads * D;
#pragma unroll
    for (int n = 0; n < NO; n++) {
        const int e = tid + n * ATT_NT, j = j0 + e / D, c = e % D;
        if (j >= L) continue;
        if (j < P.prefix) {
            // A prefix row: this sequence's share of the batch sum.
            const long long off = (long long)j * kvs + g * D + c, part = (long long)b * P.prefix * kvs + off;
            if (P.dpk) {
                if (P.part_k) P.part_k[part] = dk[n];
                else atomicAdd(P.dpk + off, dk[n]);
            }
            if (P.dpv) {
                if (P.part_v) P.part_v[part] = dv[n];
                else atomicAdd(P.dpv + off, dv[n]);
            }
        } else {
            const long long off = (long long)(k0 + j - P.prefix) * kvs + g * D + c;
            if (P.dk) ((T*)P.dk)[off] = from_f32<T>(dk[n]);
            if (P.dv) ((T*)P.dv)[off] = from_f32<T>(dv[n]);
        }
    }
}

#define ATTN_D(T, S, D)                                                                                  \
    extern "C" __global__ void __launch_bounds__(ATT_NT) attn_fwd_##S##_d##D(AttnParams P) {             \
        attn_fwd_scalar<T, D>(P);                                                                        \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(ATT_NT) attn_bwd_dq_##S##_d##D(AttnParams P) {          \
        attn_bwd_dq_scalar<T, D>(P);                                                                     \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(ATT_NT) attn_bwd_dkdv_##S##_d##D(AttnParams P) {        \
        attn_bwd_dkdv_scalar<T, D>(P);                                                                   \
    }
#define ATTN_T(T, S)                                                                                     \
    ATTN_D(T, S, 32)                                                                                     \
    ATTN_D(T, S, 64)                                                                                     \
    ATTN_D(T, S, 128)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256) attn_bwd_delta_##S(AttnParams P) { attn_bwd_delta<T>(P); }
ATTN_T(float, f32)
ATTN_T(bf16, bf16)
ATTN_T(f16, f16)

// ---- launch: engine/cuda/kernels/attention.rs -------------------------------------------------------
// fwd, dq: grid (ceil(max queries / BQ), heads, batch), 128 threads. delta: 256 threads over
// q_rows * heads. dkdv: grid (ceil(max(P + keys) / BK), kv_heads, batch), 128 threads; then
// colsum_accumulate of part_k, part_v when deterministic.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(attention) {
#define REG_D(S, D)                          \
    SHIM_REGISTER(attn_fwd_##S##_d##D);      \
    SHIM_REGISTER(attn_bwd_dq_##S##_d##D);   \
    SHIM_REGISTER(attn_bwd_dkdv_##S##_d##D);
#define REG(S)                               \
    REG_D(S, 32) REG_D(S, 64) REG_D(S, 128)  \
    SHIM_REGISTER(attn_bwd_delta_##S);
    REG(f32) REG(bf16) REG(f16)
#undef REG
#undef REG_D
}
#endif
