// align.cu: the alignment-distance reduction of the cross-lingual loss, forward and backward
// in one pass.
//
// For B parallel pairs (x_s, x_t): hidden states hs T [ns_rows, d] and ht T [nt_rows, d]
// (T = f32/bf16/f16), sequence b owning rows s_off[b]..s_off[b+1] (resp. t_off) as a packed
// batch, or a padded one (offsets b*T) with a 0/1 mask f32 per row (null: every row real):
//   fs_b = sum_rows mask * hs / count,  ft_b likewise      (masked mean pooling; an empty
//                                                           sequence pools to zeros)
//   l2[b]  = ||fs_b - ft_b||^2
//   cos[b] = 1 - fs.ft / (max(|fs|, eps) max(|ft|, eps))    (PyTorch's clamp, per norm)
// and, for the loss L = w_l2 * sum_b l2[b] + w_cos * sum_b cos[b] (the launcher passes
// w = weight / B for a mean over pairs), the gradients
//   dfs = 2 w_l2 (fs - ft) - w_cos (ft / (ns nt) - s fs / |fs|^2)   (last term where |fs| > eps)
//   dhs[row] = mask[row] / count * dfs                              (and the same for t)
// exactly as engine/cpu/{pooling,distance}.rs. One block per pair reads both sequences once
// (pooling) and writes both gradients once: the data is touched the minimum number of times.
// l2 and cos (f32 [B]) and dhs, dht (T, may be null) are OVERWRITTEN.
#include "common.cuh"

#define ALIGN_MAX_D 4096  // pooled vectors live in shared memory: 2 x 16 KB

// ---- kernels ---------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void pool(const T* __restrict__ h, const float* __restrict__ mask, int r0, int r1, int d,
                                     float* __restrict__ out, float* inv_count_out, float* scratch) {
    float count = 0.0f;
    for (int r = r0 + threadIdx.x; r < r1; r += blockDim.x) count += mask ? mask[r] : 1.0f;
    count = block_sum(count, scratch);
    float inv = count > 0.0f ? 1.0f / count : 0.0f;
    // Threads own columns; each row is read once, coalesced. Rows in order, as the CPU.
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float s = 0.0f;
        for (int r = r0; r < r1; r++) {
            float m = mask ? mask[r] : 1.0f;
            if (m != 0.0f) s += m * to_f32(h[(long long)r * d + j]);
        }
        out[j] = s * inv;
    }
    *inv_count_out = inv;
}

template <typename T>
__device__ __forceinline__ void write_grad(T* __restrict__ dh, const float* __restrict__ mask, int r0, int r1, int d,
                                           float inv, const float* __restrict__ df) {
    for (int r = r0; r < r1; r++) {
        float w = (mask ? mask[r] : 1.0f) * inv;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dh[(long long)r * d + j] = from_f32<T>(w * df[j]);
    }
}

template <typename T>
__device__ __forceinline__ void align_pairs(const T* __restrict__ hs, const int* __restrict__ s_off,
                                            const float* __restrict__ s_mask, const T* __restrict__ ht,
                                            const int* __restrict__ t_off, const float* __restrict__ t_mask, int d,
                                            float w_l2, float w_cos, float eps, float* __restrict__ l2,
                                            float* __restrict__ cosd, T* __restrict__ dhs, T* __restrict__ dht) {
    __shared__ float fs[ALIGN_MAX_D];
    __shared__ float ft[ALIGN_MAX_D];
    __shared__ float scratch[32];
    int b = blockIdx.x;
    float inv_s, inv_t;
    pool(hs, s_mask, s_off[b], s_off[b + 1], d, fs, &inv_s, scratch);
    pool(ht, t_mask, t_off[b], t_off[b + 1], d, ft, &inv_t, scratch);
    // Each thread reads back only the columns it wrote, so no barrier is needed here; the
    // reductions below end with one.
    float sd = 0.0f, sst = 0.0f, sss = 0.0f, stt = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a = fs[j], c = ft[j], e = a - c;
        sd += e * e;
        sst += a * c;
        sss += a * a;
        stt += c * c;
    }
    sd = block_sum(sd, scratch);
    sst = block_sum(sst, scratch);
    sss = block_sum(sss, scratch);
    stt = block_sum(stt, scratch);
    float na = sqrtf(sss), nb = sqrtf(stt);
    float inv = 1.0f / (fmaxf(na, eps) * fmaxf(nb, eps));
    float s = sst * inv;
    if (threadIdx.x == 0) {
        l2[b] = sd;
        cosd[b] = 1.0f - s;
    }
    if (!dhs && !dht) return;
    float ka = na > eps ? s / (na * na) : 0.0f, kb = nb > eps ? s / (nb * nb) : 0.0f;
    // Gradients of the pooled vectors, in place of the pooled vectors (own columns only).
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a = fs[j], c = ft[j];
        float ga = 2.0f * w_l2 * (a - c) - w_cos * (c * inv - ka * a);
        float gc = -2.0f * w_l2 * (a - c) - w_cos * (a * inv - kb * c);
        fs[j] = ga;
        ft[j] = gc;
    }
    if (dhs) write_grad(dhs, s_mask, s_off[b], s_off[b + 1], d, inv_s, fs);
    if (dht) write_grad(dht, t_mask, t_off[b], t_off[b + 1], d, inv_t, ft);
}

#define ALIGN_KERNELS(T, S)                                                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        align_pairs_##S(const T* hs, const int* s_off, const float* s_mask, const T* ht, const int* t_off,     \
                        const float* t_mask, int d, float w_l2, float w_cos, float eps, float* l2, float* cosd, \
                        T* dhs, T* dht) {                                                                       \
        align_pairs<T>(hs, s_off, s_mask, ht, t_off, t_mask, d, w_l2, w_cos, eps, l2, cosd, dhs, dht);          \
    }
ALIGN_KERNELS(float, f32)
ALIGN_KERNELS(bf16, bf16)
ALIGN_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/align.rs (one 256-thread block per pair; d <= 4096) ------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(align) {
    SHIM_REGISTER(align_pairs_f32);
    SHIM_REGISTER(align_pairs_bf16);
    SHIM_REGISTER(align_pairs_f16);
}
#endif
