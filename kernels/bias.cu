// bias.cu: the bias of a dense layer whose product came from cuBLAS, fused into the rounding of
// that product to the activations' type.
//
// Computes y[r, c] = acc[r, c] + b[c] for r < rows, c < d: acc f32 [rows, d] row-major (the
// product, accumulated in f32 by cuBLAS), b f32 [d], y of T = f32/bf16/f16 [rows, d], rounded
// once, as the fused LoRA kernel rounds its output. y is OVERWRITTEN; it may alias acc when T is
// f32 (each element is read and written by one thread).
// Backward: the product's gradient is dy itself and b's the column sums of dy (dense_grad.cu's
// dense_grad_b); the frozen layers that use this kernel need neither.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
// Grid-stride over the flat index; the column is i % d.
template <typename T>
__device__ __forceinline__ void bias_add(const float* acc, const float* __restrict__ b, T* y, long long n, int d) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        y[i] = from_f32<T>(acc[i] + b[i % d]);
}

#define BIAS_KERNELS(T, S)                                                                               \
    extern "C" __global__ void __launch_bounds__(256)                                                    \
        bias_add_##S(const float* acc, const float* b, T* y, long long n, int d) {                       \
        bias_add<T>(acc, b, y, n, d);                                                                    \
    }
BIAS_KERNELS(float, f32)
BIAS_KERNELS(bf16, bf16)
BIAS_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/bias.rs (256 threads, min(ceil(n / 256), 4096) blocks) -------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(bias) {
    SHIM_REGISTER(bias_add_f32);
    SHIM_REGISTER(bias_add_bf16);
    SHIM_REGISTER(bias_add_f16);
}
#endif
