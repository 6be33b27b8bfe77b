// residual.cu: a sublayer's output, dropped out, added to the residual stream; the same kernel
// is the backward of that dropout (b = null) and the sum of two activation gradients (p = 0).
//
// Computes, for every flat index i < n (T = f32/bf16/f16, arithmetic in f32):
//   y[i] = drop(a)[i] + b[i]          (b null: y[i] = drop(a)[i])
// drop() is the inverted dropout of engine/cpu/dropout.rs, bit for bit: element i is kept when
// uniform(seed, stream, i) >= p and then multiplied by `scale` = 1 / (1 - p) (rounded from f64
// by the launcher, as the CPU does); p = 0 keeps every element unscaled. The mask is a function
// of (seed, stream, i), so nothing is stored between the passes: the backward of
// y = drop(a) + b is da = drop(dy) (this kernel with b = null, same seed and stream) and db = dy.
// Fusing the add into the dropout saves a pass over the activation in the forward pass of every
// post-LayerNorm sublayer (BERT: LN(drop(sublayer(x)) + x)).
// y is OVERWRITTEN and may alias a or b: each element is read and written by one thread.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
// Grid-stride over the elements; no shared memory.
template <typename T>
__device__ __forceinline__ void add_dropout(const T* a, const T* b, T* y, long long n, u64 seed, u64 stream, float p,
                                            float scale) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        float v = to_f32(a[i]);
        if (p > 0.0f) v = pa_uniform(seed, stream, (u64)i) >= p ? v * scale : 0.0f;
        if (b) v += to_f32(b[i]);
        y[i] = from_f32<T>(v);
    }
}

#define RESIDUAL_KERNELS(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                   \
        add_dropout_##S(const T* a, const T* b, T* y, long long n, u64 seed, u64 stream, float p,       \
                        float scale) {                                                                  \
        add_dropout<T>(a, b, y, n, seed, stream, p, scale);                                             \
    }
RESIDUAL_KERNELS(float, f32)
RESIDUAL_KERNELS(bf16, bf16)
RESIDUAL_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/residual.rs (256 threads, min(ceil(n / 256), 4096) blocks) -----
#ifdef POLYADAPT_SHIM
SHIM_MODULE(residual) {
    SHIM_REGISTER(add_dropout_f32);
    SHIM_REGISTER(add_dropout_bf16);
    SHIM_REGISTER(add_dropout_f16);
}
#endif
