// pool.cu: one vector per sequence from packed hidden states (the input of a classification
// head), forward and backward; models/heads.rs `pool` on the CPU.
//
// Sequence b owns rows off[b]..off[b+1] of h T [rows, d] (packed, off[0] = 0, off[B] = rows;
// T = f32/bf16/f16, arithmetic in f32). mode 0 (FIRST): the sequence's first row; mode 1
// (MEAN): the mean over its rows. An empty sequence pools to zeros (the launcher refuses FIRST
// of an empty sequence, as the CPU does).
//   forward   out[b, j] = h[off[b], j]                     (FIRST)
//             out[b, j] = sum_{r in b} h[r, j] / len_b      (MEAN, rows summed in order)
//   backward  dh[r, j]  = dout[b, j] if r = off[b], else 0  (FIRST)
//             dh[r, j]  = dout[b, j] / len_b                (MEAN)
// out and dout are f32 [B, d] (a head's weights and its logits are f32 masters, whatever the
// backbone's element type); dh is T. out and dh are OVERWRITTEN, every row of dh written.
// One block per sequence, threads along the columns: every row read or written is coalesced,
// and each column is summed in row order by one thread (deterministic).
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void pool_fwd(const T* __restrict__ h, const int* __restrict__ off, int d, int mode,
                                         float* __restrict__ out) {
    const int b = blockIdx.x, r0 = off[b], r1 = off[b + 1];
    const int r_end = mode == 0 ? imin(r1, r0 + 1) : r1;
    const float inv = r_end > r0 ? 1.0f / (float)(r_end - r0) : 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float s = 0.0f;
        for (int r = r0; r < r_end; r++) s += to_f32(h[(long long)r * d + j]);
        out[(long long)b * d + j] = mode == 0 ? s : s * inv;
    }
}

template <typename T>
__device__ __forceinline__ void pool_bwd(const float* __restrict__ dout, const int* __restrict__ off, int d, int mode,
                                         T* __restrict__ dh) {
    const int b = blockIdx.x, r0 = off[b], r1 = off[b + 1];
    const float inv = r1 > r0 ? 1.0f / (float)(r1 - r0) : 0.0f;
    for (int r = r0; r < r1; r++) {
        const bool first = r == r0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            const float g = dout[(long long)b * d + j];
            const float v = mode == 0 ? (first ? g : 0.0f) : g * inv;
            dh[(long long)r * d + j] = from_f32<T>(v);
        }
    }
}

#define POOL_KERNELS(T, S)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128) pool_fwd_##S(const T* h, const int* off, int d, int mode,   \
                                                                   float* out) {                                 \
        pool_fwd<T>(h, off, d, mode, out);                                                                       \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) pool_bwd_##S(const float* dout, const int* off, int d,      \
                                                                   int mode, T* dh) {                            \
        pool_bwd<T>(dout, off, d, mode, dh);                                                                     \
    }
POOL_KERNELS(float, f32)
POOL_KERNELS(bf16, bf16)
POOL_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/pool.rs (one 128-thread block per sequence) -------------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(pool) {
    SHIM_REGISTER(pool_fwd_f32);
    SHIM_REGISTER(pool_bwd_f32);
    SHIM_REGISTER(pool_fwd_bf16);
    SHIM_REGISTER(pool_bwd_bf16);
    SHIM_REGISTER(pool_fwd_f16);
    SHIM_REGISTER(pool_bwd_f16);
}
#endif
