// norm.cu: LayerNorm and RMSNorm over the last dimension, forward and backward.
//
// Computes, per row of x[rows, d] (row-major, element type T = f32/bf16/f16, math in f32):
//   LayerNorm: y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps), var biased (/ d),
//              computed in two passes over the row (as PyTorch; stable for large means).
//   RMSNorm:   y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
// w, b are f32 [d] (b may be null). The forward writes y (T) and the per-row statistics mean
// (LayerNorm only) and rstd (f32 [rows]), which the backward uses to rebuild x_hat.
// Backward: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * w (RMSNorm without
// the mean(g) term): an activation gradient, OVERWRITTEN. dw += sum_rows dy * x_hat and
// db += sum_rows dy: parameter gradients, ACCUMULATED. They are summed deterministically: each
// block sums a fixed chunk of rows into a partial row, and reduce.cu's colsum_accumulate adds
// the partials in chunk order, so results do not depend on scheduling.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
// One warp per row (rows are short: d is the hidden size); four rows per 128-thread block. The
// second and third passes re-read the row from L1/L2, not from DRAM.
template <typename T, bool CENTRED>
__device__ __forceinline__ void norm_fwd(const T* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, T* __restrict__ y, float* __restrict__ mean_out,
                                         float* __restrict__ rstd_out, int rows, int d, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* xr = x + (long long)row * d;
    float mean = 0.0f;
    if (CENTRED) {
        float s = 0.0f;
        for (int j = lane; j < d; j += 32) s += to_f32(xr[j]);
        mean = warp_sum(s) / (float)d;
    }
    float s2 = 0.0f;
    for (int j = lane; j < d; j += 32) {
        float c = to_f32(xr[j]) - mean;
        s2 += c * c;
    }
    float rstd = rsqrtf(warp_sum(s2) / (float)d + eps);
    T* yr = y + (long long)row * d;
    for (int j = lane; j < d; j += 32) {
        float v = (to_f32(xr[j]) - mean) * rstd * w[j];
        if (b) v += b[j];
        yr[j] = from_f32<T>(v);
    }
    if (lane == 0) {
        if (CENTRED) mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// dx, one warp per row.
template <typename T, bool CENTRED>
__device__ __forceinline__ void norm_bwd_dx(const T* __restrict__ x, const float* __restrict__ w,
                                            const float* __restrict__ mean, const float* __restrict__ rstd,
                                            const T* __restrict__ dy, T* __restrict__ dx, int rows, int d) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    long long off = (long long)row * d;
    float mu = CENTRED ? mean[row] : 0.0f, rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    // g is rounded once (__fmul_rn: no FMA contraction) and the same value enters the means and
    // the per-element term, so that g - mean(g) is exactly 0 where it should be (d = 1): with a
    // contracted fma(dy, w, -mg) the product's rounding error, times rstd (up to 1/sqrt(eps)),
    // came out as a gradient (seen on an H100).
    for (int j = lane; j < d; j += 32) {
        float g = __fmul_rn(to_f32(dy[off + j]), w[j]);
        sg += g;
        sgx += g * (to_f32(x[off + j]) - mu) * rs;
    }
    float mg = CENTRED ? warp_sum(sg) / (float)d : 0.0f;
    float mgx = warp_sum(sgx) / (float)d;
    for (int j = lane; j < d; j += 32) {
        float g = __fmul_rn(to_f32(dy[off + j]), w[j]);
        float xh = (to_f32(x[off + j]) - mu) * rs;
        dx[off + j] = from_f32<T>(rs * (g - mg - xh * mgx));
    }
}

// Partial parameter gradients: block (column block, chunk c) sums rows [c*chunk, (c+1)*chunk)
// of dy * x_hat (and dy) for its columns into pw[c, :] (and pb[c, :], when pb is not null).
// Threads own adjacent columns, so every row read is coalesced.
template <typename T, bool CENTRED>
__device__ __forceinline__ void norm_bwd_params(const T* __restrict__ x, const float* __restrict__ mean,
                                                const float* __restrict__ rstd, const T* __restrict__ dy,
                                                float* __restrict__ pw, float* __restrict__ pb, int rows, int d,
                                                int chunk) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int c = blockIdx.y;
    if (j >= d) return;
    int r0 = c * chunk, r1 = imin(rows, r0 + chunk);
    float sw = 0.0f, sb = 0.0f;
    for (int r = r0; r < r1; r++) {
        long long off = (long long)r * d + j;
        float g = to_f32(dy[off]);
        float mu = CENTRED ? mean[r] : 0.0f;
        sw += g * (to_f32(x[off]) - mu) * rstd[r];
        sb += g;
    }
    pw[(long long)c * d + j] = sw;
    if (pb) pb[(long long)c * d + j] = sb;
}

#define NORM_KERNELS(T, S)                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_##S(const T* x, const float* w, const float* b, \
                                                                        T* y, float* mean, float* rstd, int rows,   \
                                                                        int d, float eps) {                         \
        norm_fwd<T, true>(x, w, b, y, mean, rstd, rows, d, eps);                                                    \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(128) rmsnorm_fwd_##S(const T* x, const float* w, T* y,             \
                                                                      float* rstd, int rows, int d, float eps) {    \
        norm_fwd<T, false>(x, w, nullptr, y, nullptr, rstd, rows, d, eps);                                          \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(128) layernorm_bwd_dx_##S(                                         \
        const T* x, const float* w, const float* mean, const float* rstd, const T* dy, T* dx, int rows, int d) {    \
        norm_bwd_dx<T, true>(x, w, mean, rstd, dy, dx, rows, d);                                                    \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(128) rmsnorm_bwd_dx_##S(const T* x, const float* w,                \
                                                                         const float* rstd, const T* dy, T* dx,     \
                                                                         int rows, int d) {                         \
        norm_bwd_dx<T, false>(x, w, nullptr, rstd, dy, dx, rows, d);                                                \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(128) layernorm_bwd_params_##S(                                     \
        const T* x, const float* mean, const float* rstd, const T* dy, float* pw, float* pb, int rows, int d,       \
        int chunk) {                                                                                                \
        norm_bwd_params<T, true>(x, mean, rstd, dy, pw, pb, rows, d, chunk);                                        \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(128) rmsnorm_bwd_params_##S(                                       \
        const T* x, const float* rstd, const T* dy, float* pw, int rows, int d, int chunk) {                        \
        norm_bwd_params<T, false>(x, nullptr, rstd, dy, pw, nullptr, rows, d, chunk);                               \
    }

NORM_KERNELS(float, f32)
NORM_KERNELS(bf16, bf16)
NORM_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/norm.rs --------------------------------------------------------
// fwd, bwd_dx: 128 threads, one warp per row, ceil(rows / 4) blocks.
// bwd_params: 128 threads, grid (ceil(d / 128), ceil(rows / chunk)); then colsum_accumulate.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(norm) {
#define REG(S)                                \
    SHIM_REGISTER(layernorm_fwd_##S);         \
    SHIM_REGISTER(rmsnorm_fwd_##S);           \
    SHIM_REGISTER(layernorm_bwd_dx_##S);      \
    SHIM_REGISTER(rmsnorm_bwd_dx_##S);        \
    SHIM_REGISTER(layernorm_bwd_params_##S);  \
    SHIM_REGISTER(rmsnorm_bwd_params_##S);
    REG(f32) REG(bf16) REG(f16)
#undef REG
}
#endif
