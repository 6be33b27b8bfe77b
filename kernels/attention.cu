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
// Scalar path design: one thread per query row (forward, dQ) or per key row (dK, dV), so that
// the only barriers are the two around each shared-memory tile; its own row lives in padded
// shared memory (stride D + 1: no bank conflicts when 32 threads read 32 rows), the streamed
// tile is read by all threads at the same address (a broadcast). Accumulators of D floats
// stay in registers: D = 128 splits dK and dV into two launches to stay under the limit.
#include "attention_common.cuh"

template <int D> struct FwdCfg;
template <> struct FwdCfg<32> { static const int BQ = 64, BK = 32; };
template <> struct FwdCfg<64> { static const int BQ = 64, BK = 32; };
template <> struct FwdCfg<128> { static const int BQ = 32, BK = 16; };
template <int D> struct DqCfg;
template <> struct DqCfg<32> { static const int BQ = 64, BK = 32; };
template <> struct DqCfg<64> { static const int BQ = 32, BK = 32; };
template <> struct DqCfg<128> { static const int BQ = 32, BK = 8; };
template <int D> struct DkvCfg;  // BK keys (= threads) per block, BQ queries per tile
template <> struct DkvCfg<32> { static const int BK = 64, BQ = 64; };
template <> struct DkvCfg<64> { static const int BK = 32, BQ = 32; };
template <> struct DkvCfg<128> { static const int BK = 32, BQ = 8; };

// Element c of key (or value) row j of [prefix ; sequence] for kv head g, as f32; 0 past L.
template <typename T, int D>
__device__ __forceinline__ float kv_elem(const AttnParams& P, const void* pre, const void* seq, int k0, int L, int g,
                                         int j, int c) {
    long long kvs = (long long)P.kv_heads * D;
    if (j < P.prefix) return to_f32(((const T*)pre)[j * kvs + g * D + c]);
    if (j < L) return to_f32(((const T*)seq)[(long long)(k0 + j - P.prefix) * kvs + g * D + c]);
    return 0.0f;
}

// ---- kernels: forward ---------------------------------------------------------------------------
template <typename T, int D>
__device__ __forceinline__ void attn_fwd_scalar(const AttnParams& P) {
    constexpr int BQ = FwdCfg<D>::BQ, BK = FwdCfg<D>::BK;
    __shared__ float sQ[BQ][D + 1];
    __shared__ float sK[BK][D];
    __shared__ float sV[BK][D];
    const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x, tid = threadIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    if (tile * BQ >= nq) return;  // the whole block: before any barrier
    const int g = h / (P.heads / P.kv_heads), L = P.prefix + nk;
    const long long qs = (long long)P.heads * D;
    const T* q = (const T*)P.q;
    for (int i = tid; i < BQ * D; i += BQ) {
        int r = i / D, c = i % D, row = tile * BQ + r;
        sQ[r][c] = row < nq ? to_f32(q[(q0 + row) * qs + h * D + c]) : 0.0f;
    }
    const int t = tile * BQ + tid;
    const bool valid = t < nq;
    float m = -PA_INFINITY, l = 0.0f, o[D];
#pragma unroll
    for (int c = 0; c < D; c++) o[c] = 0.0f;
    for (int kt = 0; kt < L; kt += BK) {
        __syncthreads();  // the previous tile is consumed (and, the first time, sQ is written)
        for (int i = tid; i < BK * D; i += BQ) {
            int r = i / D, c = i % D;
            sK[r][c] = kv_elem<T, D>(P, P.pk, P.k, k0, L, g, kt + r, c);
            sV[r][c] = kv_elem<T, D>(P, P.pv, P.v, k0, L, g, kt + r, c);
        }
        __syncthreads();
        if (!valid) continue;
        float s[BK];
#pragma unroll
        for (int jj = 0; jj < BK; jj++) s[jj] = 0.0f;
#pragma unroll 4
        for (int c = 0; c < D; c++) {
            float qc = sQ[tid][c];
#pragma unroll
            for (int jj = 0; jj < BK; jj++) s[jj] += qc * sK[jj][c];
        }
        float mt = -PA_INFINITY;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            int j = kt + jj;
            bool vis = j < L && (j < P.prefix || attn_visible(P, k0, nq, nk, t, j - P.prefix));
            s[jj] = vis ? s[jj] * P.scale : -PA_INFINITY;
            mt = fmaxf(mt, s[jj]);
        }
        if (mt == -PA_INFINITY) continue;
        float mn = fmaxf(m, mt), corr = expf(m - mn);  // exp(-inf) = 0 on the first visible tile
        l *= corr;
#pragma unroll
        for (int c = 0; c < D; c++) o[c] *= corr;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            if (s[jj] == -PA_INFINITY) continue;
            float p = expf(s[jj] - mn);
            l += p;
            p *= attn_keep(P, h, q0 + t, kt + jj);
#pragma unroll
            for (int c = 0; c < D; c++) o[c] += p * sV[jj][c];
        }
        m = mn;
    }
    if (!valid) return;
    T* out = (T*)P.out + (q0 + t) * qs + h * D;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int c = 0; c < D; c++) out[c] = from_f32<T>(o[c] * inv);
    P.lse[(long long)h * P.q_rows + q0 + t] = l > 0.0f ? m + logf(l) : -PA_INFINITY;
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

// dQ: one thread per query row, key tiles streamed as in the forward.
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_dq_scalar(const AttnParams& P) {
    constexpr int BQ = DqCfg<D>::BQ, BK = DqCfg<D>::BK;
    __shared__ float sQ[BQ][D + 1];
    __shared__ float sdO[BQ][D + 1];
    __shared__ float sK[BK][D];
    __shared__ float sV[BK][D];
    const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x, tid = threadIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    if (tile * BQ >= nq) return;
    const int g = h / (P.heads / P.kv_heads), L = P.prefix + nk;
    const long long qs = (long long)P.heads * D;
    for (int i = tid; i < BQ * D; i += BQ) {
        int r = i / D, c = i % D, row = tile * BQ + r;
        long long off = (q0 + row) * qs + h * D + c;
        sQ[r][c] = row < nq ? to_f32(((const T*)P.q)[off]) : 0.0f;
        sdO[r][c] = row < nq ? to_f32(((const T*)P.dout)[off]) : 0.0f;
    }
    const int t = tile * BQ + tid;
    const bool valid = t < nq;
    const float lse = valid ? P.lse[(long long)h * P.q_rows + q0 + t] : -PA_INFINITY;
    const float dl = valid ? P.delta[(long long)h * P.q_rows + q0 + t] : 0.0f;
    float dq[D];
#pragma unroll
    for (int c = 0; c < D; c++) dq[c] = 0.0f;
    for (int kt = 0; kt < L; kt += BK) {
        __syncthreads();
        for (int i = tid; i < BK * D; i += BQ) {
            int r = i / D, c = i % D;
            sK[r][c] = kv_elem<T, D>(P, P.pk, P.k, k0, L, g, kt + r, c);
            sV[r][c] = kv_elem<T, D>(P, P.pv, P.v, k0, L, g, kt + r, c);
        }
        __syncthreads();
        if (lse == -PA_INFINITY) continue;  // sees no key (or not a query): dq stays 0
        float s[BK], dp[BK];
#pragma unroll
        for (int jj = 0; jj < BK; jj++) s[jj] = dp[jj] = 0.0f;
#pragma unroll 4
        for (int c = 0; c < D; c++) {
            float qc = sQ[tid][c], gc = sdO[tid][c];
#pragma unroll
            for (int jj = 0; jj < BK; jj++) {
                s[jj] += qc * sK[jj][c];
                dp[jj] += gc * sV[jj][c];
            }
        }
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            int j = kt + jj;
            if (j >= L || (j >= P.prefix && !attn_visible(P, k0, nq, nk, t, j - P.prefix))) continue;
            float p = expf(s[jj] * P.scale - lse);
            float ds = p * (attn_keep(P, h, q0 + t, j) * dp[jj] - dl) * P.scale;
#pragma unroll
            for (int c = 0; c < D; c++) dq[c] += ds * sK[jj][c];
        }
    }
    if (!valid || !P.dq) return;
    T* out = (T*)P.dq + (q0 + t) * qs + h * D;
#pragma unroll
    for (int c = 0; c < D; c++) out[c] = from_f32<T>(dq[c]);
}

// dK and/or dV (MODE bit 1: dK, bit 2: dV): one thread per key row j of [prefix ; sequence b]
// for kv head g, summing over the query heads of its group and over the sequence's queries,
// which stream through shared memory with their lse and delta.
template <typename T, int D, int MODE>
__device__ __forceinline__ void attn_bwd_dkdv_scalar(const AttnParams& P) {
    constexpr int BK = DkvCfg<D>::BK, BQ = DkvCfg<D>::BQ;
    constexpr bool DK = (MODE & 1) != 0, DV = (MODE & 2) != 0;
    constexpr int DKN = DK ? D : 1, DVN = DV ? D : 1;
    __shared__ float sKo[BK][D + 1];
    __shared__ float sVo[DK ? BK : 1][D + 1];  // dK needs dO . v_j; dV does not
    __shared__ float sQ[BQ][D];
    __shared__ float sdO[BQ][D];
    __shared__ float sL[BQ];
    __shared__ float sDl[BQ];
    const int b = blockIdx.z, g = blockIdx.y, tile = blockIdx.x, tid = threadIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    const int L = P.prefix + nk;
    if (tile * BK >= L) return;
    const long long qs = (long long)P.heads * D, kvs = (long long)P.kv_heads * D;
    for (int i = tid; i < BK * D; i += BK) {
        int r = i / D, c = i % D;
        sKo[r][c] = kv_elem<T, D>(P, P.pk, P.k, k0, L, g, tile * BK + r, c);
        if (DK) sVo[r][c] = kv_elem<T, D>(P, P.pv, P.v, k0, L, g, tile * BK + r, c);
    }
    const int j = tile * BK + tid;
    const bool valid = j < L;
    float dk[DKN], dv[DVN];
#pragma unroll
    for (int c = 0; c < DKN; c++) dk[c] = 0.0f;
#pragma unroll
    for (int c = 0; c < DVN; c++) dv[c] = 0.0f;
    const int rep = P.heads / P.kv_heads;
    for (int r = 0; r < rep; r++) {
        const int h = g * rep + r;
        for (int qt = 0; qt < nq; qt += BQ) {
            __syncthreads();
            for (int i = tid; i < BQ * D; i += BK) {
                int rr = i / D, c = i % D, t = qt + rr;
                long long off = (q0 + t) * qs + h * D + c;
                sQ[rr][c] = t < nq ? to_f32(((const T*)P.q)[off]) : 0.0f;
                sdO[rr][c] = t < nq ? to_f32(((const T*)P.dout)[off]) : 0.0f;
            }
            for (int i = tid; i < BQ; i += BK) {
                int t = qt + i;
                sL[i] = t < nq ? P.lse[(long long)h * P.q_rows + q0 + t] : -PA_INFINITY;
                sDl[i] = t < nq ? P.delta[(long long)h * P.q_rows + q0 + t] : 0.0f;
            }
            __syncthreads();
            if (!valid) continue;
            const int n = imin(BQ, nq - qt);
            for (int i = 0; i < n; i++) {
                const int t = qt + i;
                if (sL[i] == -PA_INFINITY) continue;
                if (j >= P.prefix && !attn_visible(P, k0, nq, nk, t, j - P.prefix)) continue;
                float s = 0.0f;
#pragma unroll 8
                for (int c = 0; c < D; c++) s += sKo[tid][c] * sQ[i][c];
                float p = expf(s * P.scale - sL[i]);
                float keep = attn_keep(P, h, q0 + t, j);
                if (DV) {
                    float pk = p * keep;
#pragma unroll
                    for (int c = 0; c < DVN; c++) dv[c] += pk * sdO[i][c];
                }
                if (DK) {
                    float dp = 0.0f;
#pragma unroll 8
                    for (int c = 0; c < D; c++) dp += sVo[DK ? tid : 0][c] * sdO[i][c];
                    float ds = p * (keep * dp - sDl[i]) * P.scale;
#pragma unroll
                    for (int c = 0; c < DKN; c++) dk[c] += ds * sQ[i][c];
                }
            }
        }
    }
    if (!valid) return;
    if (j < P.prefix) {
        // A prefix row: this sequence's share of the batch sum.
        long long off = (long long)j * kvs + g * D;
        long long part = (long long)b * P.prefix * kvs + off;
        if (DK && P.dpk) {
#pragma unroll
            for (int c = 0; c < DKN; c++) {
                if (P.part_k) P.part_k[part + c] = dk[c];
                else atomicAdd(P.dpk + off + c, dk[c]);
            }
        }
        if (DV && P.dpv) {
#pragma unroll
            for (int c = 0; c < DVN; c++) {
                if (P.part_v) P.part_v[part + c] = dv[c];
                else atomicAdd(P.dpv + off + c, dv[c]);
            }
        }
    } else {
        long long off = (long long)(k0 + j - P.prefix) * kvs + g * D;
        if (DK && P.dk) {
            T* o = (T*)P.dk + off;
#pragma unroll
            for (int c = 0; c < DKN; c++) o[c] = from_f32<T>(dk[c]);
        }
        if (DV && P.dv) {
            T* o = (T*)P.dv + off;
#pragma unroll
            for (int c = 0; c < DVN; c++) o[c] = from_f32<T>(dv[c]);
        }
    }
}

#define ATTN_D(T, S, D)                                                                                        \
    extern "C" __global__ void __launch_bounds__(FwdCfg<D>::BQ) attn_fwd_##S##_d##D(AttnParams P) {            \
        attn_fwd_scalar<T, D>(P);                                                                              \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(DqCfg<D>::BQ) attn_bwd_dq_##S##_d##D(AttnParams P) {          \
        attn_bwd_dq_scalar<T, D>(P);                                                                           \
    }
#define ATTN_T(T, S)                                                                                           \
    ATTN_D(T, S, 32)                                                                                           \
    ATTN_D(T, S, 64)                                                                                           \
    ATTN_D(T, S, 128)                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) attn_bwd_delta_##S(AttnParams P) { attn_bwd_delta<T>(P); } \
    extern "C" __global__ void __launch_bounds__(64) attn_bwd_dkdv_##S##_d32(AttnParams P) {                   \
        attn_bwd_dkdv_scalar<T, 32, 3>(P);                                                                     \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(32) attn_bwd_dkdv_##S##_d64(AttnParams P) {                   \
        attn_bwd_dkdv_scalar<T, 64, 3>(P);                                                                     \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(32) attn_bwd_dk_##S##_d128(AttnParams P) {                    \
        attn_bwd_dkdv_scalar<T, 128, 1>(P);                                                                    \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(32) attn_bwd_dv_##S##_d128(AttnParams P) {                    \
        attn_bwd_dkdv_scalar<T, 128, 2>(P);                                                                    \
    }
ATTN_T(float, f32)
ATTN_T(bf16, bf16)
ATTN_T(f16, f16)

// ---- launch: engine/cuda/kernels/attention.rs -------------------------------------------------------
// fwd, dq: grid (ceil(max queries / BQ), heads, batch), BQ threads.
// delta: 256 threads over q_rows * heads. dkdv (dk, dv for D = 128): grid (ceil(max(P + keys)
// / BK), kv_heads, batch), BK threads; then colsum_accumulate of part_k, part_v when
// deterministic.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(attention) {
#define REG_D(S, D)                          \
    SHIM_REGISTER(attn_fwd_##S##_d##D);      \
    SHIM_REGISTER(attn_bwd_dq_##S##_d##D);
#define REG(S)                               \
    REG_D(S, 32) REG_D(S, 64) REG_D(S, 128)  \
    SHIM_REGISTER(attn_bwd_delta_##S);       \
    SHIM_REGISTER(attn_bwd_dkdv_##S##_d32);  \
    SHIM_REGISTER(attn_bwd_dkdv_##S##_d64);  \
    SHIM_REGISTER(attn_bwd_dk_##S##_d128);   \
    SHIM_REGISTER(attn_bwd_dv_##S##_d128);
    REG(f32) REG(bf16) REG(f16)
#undef REG
#undef REG_D
}
#endif
