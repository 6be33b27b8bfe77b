// lora.cu: a frozen linear layer with a LoRA update, fused; the scalar path (any GPU, f32/bf16/
// f16, and the host shim). The tensor-core path of the fused kernels is lora_mma.cu.
//
// Computes, as models/peft/lora.rs on the CPU (peft's lora.Linear):
//   forward   y  = x W^T + b + s * h B^T,         h = drop(x) A^T               (fused_fwd)
//   backward  dX = dY W + s * drop(g A),           g = dY B                      (fused_bwd)
//             dA += s * g^T drop(x),  dB += s * dY^T h                           (grad_a, grad_b)
// with x, y, dY, dX [n, ...] and the frozen W [dout, din] of one element type T (all arithmetic
// in f32); A [r, din], B [dout, r], the bias [dout], h and g [n, r], dA and dB in f32 (the
// trainable matrices are f32 masters, as on the CPU). drop() is the LoRA branch's inverted
// dropout on x: element i of x (flat index row * din + col) is kept when
// uniform(seed, stream, i) >= p and then scaled by 1 / (1 - p), bit-identical to
// engine/cpu/dropout.rs; its backward applies the same mask to dX's low-rank term only.
// y, dX, h, g are OVERWRITTEN; dA, dB (parameter gradients) ACCUMULATE, through per-chunk
// partials summed in a fixed order (reduce.cu), so they are deterministic. W gets no gradient:
// it is frozen, and no kernel here computes one.
//
// Fusion: forward and backward are one kernel shape, out = in M + s * mask(in U) V: a block
// owns a BM x BN tile of the output and streams the input's BM x BK tiles through shared
// memory once, using each for both the frozen product (in M) and the low-rank projection
// (in U, BM x R, kept in registers), then adds s * (in U) V from shared memory before the one
// store. The projection is recomputed by every column block (R <= 64 columns against BN = 64
// of the frozen product: cheap), and the first column block writes it out (h or g) for the
// parameter gradients. With out = null only the projection runs (h recomputed in a backward
// that did not keep it, or g when dX is not wanted).
//
// Scalar path design: 128 threads, each an 8 x 4 register tile of the output (rows ty + 8 i,
// columns tx + 16 j: a warp reads 16 consecutive columns of the streamed weight tile and two
// broadcast input rows), and BM * R / 128 projection accumulators; the low-rank term's shared
// memory (h BM x R, V R x BN) aliases the streamed tiles' (a union), under the 48 KB of static
// shared memory. R (16 or 64) is the rank rounded up; ranks below it are zero-padded. R = 0 is a
// frozen linear layer alone (no projection, no low-rank term, no LoRA operand read): the frozen
// products of a model's projections without LoRA (models/bert_cuda); only fused_fwd and
// fused_bwd exist for it.
#include "lora_common.cuh"

#define LORA_NT 128  // threads per block
#define LORA_BM 64   // output rows (tokens) per block
#define LORA_BN 64   // output columns per block
#define LORA_BK 16   // depth of a streamed tile

template <int R>
struct LoraSmem {
    static constexpr int RA = R > 0 ? R : 1;  // array extent; at R = 0 no loop reaches it
    union {
        struct {
            float in[LORA_BK][LORA_BM + 4];   // input tile, k-major
            float ind[LORA_BK][LORA_BM + 4];  // the same, dropped (forward with dropout)
            float m[LORA_BK][LORA_BN + 4];    // frozen weight tile, k-major
            float u[LORA_BK][RA];             // U tile
        } k;
        struct {
            float h[LORA_BM][RA + 1];         // the projection in U of the block's rows
            float v[RA][LORA_BN + 4];         // V tile
        } lr;
    };
};

// ---- kernels ---------------------------------------------------------------------------------
template <typename T, int R, bool BWD>
__device__ __forceinline__ void lora_fused(const LoraParams& P) {
    constexpr int BM = LORA_BM, BN = LORA_BN, BK = LORA_BK, NT = LORA_NT;
    constexpr int NU = BM * R / NT;  // projection accumulators per thread (0 at R = 0)
    constexpr int R1 = R > 0 ? R : 1;  // divisor in loops that do not run at R = 0
    __shared__ LoraSmem<R> sm;
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int N = BWD ? P.din : P.dout, K = BWD ? P.dout : P.din;
    const bool base = P.out != nullptr;  // uniform over the grid
    const bool drop_in = !BWD && P.drop_p > 0.0f;
    const T* in = (const T*)P.in;
    const T* w = (const T*)P.w;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    float u[NU > 0 ? NU : 1];
#pragma unroll
    for (int e = 0; e < NU; e++) u[e] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        __syncthreads();  // the previous tiles are consumed
        // Input tile: consecutive threads read consecutive k of a row.
        for (int i = tid; i < BM * BK; i += NT) {
            const int r = i / BK, k = i % BK, m = m0 + r, kk = k0 + k;
            sm.k.in[k][r] = (m < P.n && kk < K) ? to_f32(in[(long long)m * K + kk]) : 0.0f;
        }
        if (drop_in) {
            // The same elements as the loop above: this thread wrote them, no barrier needed.
            for (int i = tid; i < BM * BK; i += NT) {
                const int r = i / BK, k = i % BK, m = m0 + r, kk = k0 + k;
                sm.k.ind[k][r] = sm.k.in[k][r] * lora_keep(P, (long long)m * P.din + kk);
            }
        }
        if (base) {
            for (int i = tid; i < BK * BN; i += NT) {
                float v;
                if (!BWD) {  // W^T: element (k, c) is W[n0 + c][k0 + k]; threads along k
                    const int c = i / BK, k = i % BK, o = n0 + c, kk = k0 + k;
                    v = (o < N && kk < K) ? to_f32(w[(long long)o * P.din + kk]) : 0.0f;
                    sm.k.m[k][c] = v;
                } else {  // W: element (k, c) is W[k0 + k][n0 + c]; threads along c
                    const int k = i / BN, c = i % BN, o = k0 + k, cc = n0 + c;
                    v = (o < K && cc < N) ? to_f32(w[(long long)o * P.din + cc]) : 0.0f;
                    sm.k.m[k][c] = v;
                }
            }
        }
        if constexpr (R > 0) {  // (the host compiler's bounds analysis would flag the empty loop)
            for (int i = tid; i < BK * R; i += NT) {
                // forward: A[q][k0 + k] (A is [r, din]); backward: B[k0 + k][q] (B is [dout, r]).
                const int k = i / R1, q = i % R1, kk = k0 + k;
                float v = 0.0f;
                if (q < P.r && kk < K) v = BWD ? P.u_mat[(long long)kk * P.r + q] : P.u_mat[(long long)q * P.din + kk];
                sm.k.u[k][q] = v;
            }
        }
        __syncthreads();
        float(*const lin)[LORA_BM + 4] = drop_in ? sm.k.ind : sm.k.in;  // the low-rank path's input
#pragma unroll 2  // 4 takes sm_90 to 255 registers at R = 64
        for (int k = 0; k < BK; k++) {
            if (base) {
                float a[8], b[4];
#pragma unroll
                for (int i = 0; i < 8; i++) a[i] = sm.k.in[k][ty + 8 * i];
#pragma unroll
                for (int j = 0; j < 4; j++) b[j] = sm.k.m[k][tx + 16 * j];
#pragma unroll
                for (int i = 0; i < 8; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
            }
#pragma unroll
            for (int e = 0; e < NU; e++) {
                const int pair = tid + NT * e, r = pair / R1, q = pair % R1;
                u[e] += lin[k][r] * sm.k.u[k][q];
            }
        }
    }
    __syncthreads();  // the streamed tiles are consumed: sm.lr aliases them
#pragma unroll
    for (int e = 0; e < NU; e++) {
        const int pair = tid + NT * e, r = pair / R1, q = pair % R1, m = m0 + r;
        sm.lr.h[r][q] = u[e];
        if (blockIdx.x == 0 && P.u_out && m < P.n && q < P.r) P.u_out[(long long)m * P.r + q] = u[e];
    }
    if (!base) return;  // the whole grid
    for (int i = tid; i < R * BN; i += NT) {
        // forward: B[n0 + c][q] (B is [dout, r]); backward: A[q][n0 + c] (A is [r, din]).
        const int q = i / BN, c = i % BN, cc = n0 + c;
        float v = 0.0f;
        if (q < P.r && cc < N) v = BWD ? P.v_mat[(long long)q * P.din + cc] : P.v_mat[(long long)cc * P.r + q];
        sm.lr.v[q][c] = v;
    }
    __syncthreads();
    T* out = (T*)P.out;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int r = ty + 8 * i, m = m0 + r;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int c = tx + 16 * j, cc = n0 + c;
            float l = 0.0f;
#pragma unroll 4
            for (int q = 0; q < R; q++) l += sm.lr.h[r][q] * sm.lr.v[q][c];
            if (m >= P.n || cc >= N) continue;
            float y;
            if (!BWD) {
                y = acc[i][j] + (P.bias ? P.bias[cc] : 0.0f) + P.scale * l;
            } else {
                const float keep = P.drop_p > 0.0f ? lora_keep(P, (long long)m * P.din + cc) : 1.0f;
                y = acc[i][j] + P.scale * keep * l;
            }
            out[(long long)m * N + cc] = from_f32<T>(y);
        }
    }
}

// Partial parameter gradients of one chunk of tokens (blockIdx.y), one column per thread with
// the R ranks in registers; the chunk's rows of the rank operand go through shared memory:
//   DA: partial[chunk][q * cols + c] = s * sum_m g[m][q] * drop(x)[m][c]   (cols = din)
//   DB: partial[chunk][c * r + q]    = s * sum_m h[m][q] * dY[m][c]        (cols = dout)
// The launcher sums the partials in chunk order into dA or dB (colsum_accumulate).
template <typename T, int R, bool DA>
__device__ __forceinline__ void lora_grad(const T* src, int cols, const float* rank, int n, int r, int rows_per_chunk,
                                          u64 seed, u64 stream, float drop_p, float drop_scale, float scale,
                                          float* partial) {
    constexpr int TM = 32;  // tokens per shared tile
    __shared__ float sR[TM][R];
    const int c = blockIdx.x * LORA_NT + threadIdx.x, chunk = blockIdx.y;
    const int m_begin = chunk * rows_per_chunk, m_end = imin(n, m_begin + rows_per_chunk);
    float acc[R];
#pragma unroll
    for (int q = 0; q < R; q++) acc[q] = 0.0f;
    for (int mt = m_begin; mt < m_end; mt += TM) {
        __syncthreads();
        for (int i = threadIdx.x; i < TM * R; i += LORA_NT) {
            const int t = i / R, q = i % R, m = mt + t;
            sR[t][q] = (m < m_end && q < r) ? rank[(long long)m * r + q] : 0.0f;
        }
        __syncthreads();
        if (c >= cols) continue;
        const int tn = imin(TM, m_end - mt);
        for (int t = 0; t < tn; t++) {
            const long long idx = (long long)(mt + t) * cols + c;
            float v = to_f32(src[idx]);
            if (DA && drop_p > 0.0f) v = pa_uniform(seed, stream, (u64)idx) >= drop_p ? v * drop_scale : 0.0f;
#pragma unroll
            for (int q = 0; q < R; q++) acc[q] += v * sR[t][q];
        }
    }
    if (c >= cols) return;
    float* out = partial + (long long)chunk * r * cols;
#pragma unroll
    for (int q = 0; q < R; q++) {
        if (q < r) out[DA ? (long long)q * cols + c : (long long)c * r + q] = acc[q] * scale;
    }
}

#define LORA_R(T, S, R)                                                                                  \
    extern "C" __global__ void __launch_bounds__(LORA_NT) lora_fwd_##S##_r##R(LoraParams P) {            \
        lora_fused<T, R, false>(P);                                                                      \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_NT) lora_bwd_##S##_r##R(LoraParams P) {            \
        lora_fused<T, R, true>(P);                                                                       \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_NT)                                                \
        lora_grad_a_##S##_r##R(const T* x, int cols, const float* g, int n, int r, int rows_per_chunk,   \
                               u64 seed, u64 stream, float drop_p, float drop_scale, float scale,        \
                               float* partial) {                                                         \
        lora_grad<T, R, true>(x, cols, g, n, r, rows_per_chunk, seed, stream, drop_p, drop_scale, scale, \
                              partial);                                                                  \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_NT)                                                \
        lora_grad_b_##S##_r##R(const T* dy, int cols, const float* h, int n, int r, int rows_per_chunk,  \
                               u64 seed, u64 stream, float drop_p, float drop_scale, float scale,        \
                               float* partial) {                                                         \
        lora_grad<T, R, false>(dy, cols, h, n, r, rows_per_chunk, seed, stream, drop_p, drop_scale,      \
                               scale, partial);                                                          \
    }
// Rank 0: the fused kernels only (a frozen layer has no parameter gradients).
#define LORA_R0(T, S)                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_NT) lora_fwd_##S##_r0(LoraParams P) {              \
        lora_fused<T, 0, false>(P);                                                                      \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_NT) lora_bwd_##S##_r0(LoraParams P) {              \
        lora_fused<T, 0, true>(P);                                                                       \
    }
#define LORA_T(T, S) LORA_R0(T, S) LORA_R(T, S, 16) LORA_R(T, S, 64)
LORA_T(float, f32)
LORA_T(bf16, bf16)
LORA_T(f16, f16)

// ---- launch: engine/cuda/kernels/lora.rs ------------------------------------------------------
// fwd, bwd (r0, r16, r64): grid (ceil(N / 64), ceil(n / 64)), 128 threads (grid x = 1 for the projection
// alone). grad_a, grad_b: grid (ceil(cols / 128), chunks), 128 threads; then
// colsum_accumulate of the partials into dA or dB.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(lora) {
#define REG_R(S, R)                       \
    SHIM_REGISTER(lora_fwd_##S##_r##R);    \
    SHIM_REGISTER(lora_bwd_##S##_r##R);    \
    SHIM_REGISTER(lora_grad_a_##S##_r##R); \
    SHIM_REGISTER(lora_grad_b_##S##_r##R);
#define REG(S)                  \
    SHIM_REGISTER(lora_fwd_##S##_r0); \
    SHIM_REGISTER(lora_bwd_##S##_r0); \
    REG_R(S, 16) REG_R(S, 64)
    REG(f32) REG(bf16) REG(f16)
#undef REG
#undef REG_R
}
#endif
