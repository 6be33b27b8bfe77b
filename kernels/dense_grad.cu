// dense_grad.cu: the parameter gradients of a trainable dense layer y = x W^T + b (a task
// head; the frozen backbone's layers never get these). The input gradient dx = dy W is
// lora.cu's fused backward at rank 0.
//
// Computes, for x T [n, din], dy T [n, dout] (T = f32/bf16/f16, arithmetic in f32):
//   dW[o, i] += sum_m dy[m, o] x[m, i]        (W [dout, din], as nn.Linear)
//   db[o]    += sum_m dy[m, o]                (the bias gradient: dy's column sums)
// dW and db are f32 parameter gradients and ACCUMULATE. Deterministically: block (column
// block, chunk c) sums the rows of chunk c into partial[c, :] (OVERWRITTEN), and reduce.cu's
// colsum_accumulate adds the partials in chunk order into dW or db, so the result does not
// depend on scheduling (as lora.cu's grad_a/grad_b and norm.cu's parameter gradients).
// One thread per element of W (or b): consecutive threads take consecutive i of one o, so a
// warp reads a contiguous piece of an x row and one broadcast dy element per row.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void dense_grad_w(const T* __restrict__ x, const T* __restrict__ dy, int n, int din, int dout,
                                             int rows_per_chunk, float* __restrict__ partial) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x, total = (long long)din * dout;
    if (e >= total) return;
    const int o = (int)(e / din), i = (int)(e % din), c = blockIdx.y;
    const int m0 = c * rows_per_chunk, m1 = imin(n, m0 + rows_per_chunk);
    float s = 0.0f;
    for (int m = m0; m < m1; m++) s += to_f32(dy[(long long)m * dout + o]) * to_f32(x[(long long)m * din + i]);
    partial[(long long)c * total + e] = s;
}

template <typename T>
__device__ __forceinline__ void dense_grad_b(const T* __restrict__ dy, int n, int dout, int rows_per_chunk,
                                             float* __restrict__ partial) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y;
    if (o >= dout) return;
    const int m0 = c * rows_per_chunk, m1 = imin(n, m0 + rows_per_chunk);
    float s = 0.0f;
    for (int m = m0; m < m1; m++) s += to_f32(dy[(long long)m * dout + o]);
    partial[(long long)c * dout + o] = s;
}

#define DENSE_GRAD_KERNELS(T, S)                                                                              \
    extern "C" __global__ void __launch_bounds__(128) dense_grad_w_##S(                                       \
        const T* x, const T* dy, int n, int din, int dout, int rows_per_chunk, float* partial) {              \
        dense_grad_w<T>(x, dy, n, din, dout, rows_per_chunk, partial);                                        \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(128) dense_grad_b_##S(const T* dy, int n, int dout,           \
                                                                       int rows_per_chunk, float* partial) {  \
        dense_grad_b<T>(dy, n, dout, rows_per_chunk, partial);                                                \
    }
DENSE_GRAD_KERNELS(float, f32)
DENSE_GRAD_KERNELS(bf16, bf16)
DENSE_GRAD_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/dense_grad.rs --------------------------------------------------
// grad_w: grid (ceil(dout * din / 128), chunks); grad_b: grid (ceil(dout / 128), chunks); 128
// threads; then colsum_accumulate of the partials.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(dense_grad) {
    SHIM_REGISTER(dense_grad_w_f32);
    SHIM_REGISTER(dense_grad_b_f32);
    SHIM_REGISTER(dense_grad_w_bf16);
    SHIM_REGISTER(dense_grad_b_bf16);
    SHIM_REGISTER(dense_grad_w_f16);
    SHIM_REGISTER(dense_grad_b_f16);
}
#endif
