// cast.cu: element type conversions between f32 and the 16-bit floats.
//
// Computes y[i] = x[i] converted, for i < n. f32 -> bf16/f16 rounds to nearest even (as the
// `half` crate on the CPU, so device and CPU agree bit for bit); the 16-bit -> f32 direction is
// exact. Overflow to f16 gives inf; NaN stays NaN. Flat layout; overwrites y.
// Used to make bf16/f16 working copies of f32 master parameters (prefix keys/values, LoRA
// matrices) each step, and to read results back.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
// Grid-stride loop: any grid works; the launcher sizes it to cover n once.
template <typename A, typename B>
__device__ __forceinline__ void cast_body(const A* __restrict__ x, B* __restrict__ y, long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = from_f32<B>(to_f32(x[i]));
}

extern "C" __global__ void cast_f32_bf16(const float* x, bf16* y, long long n) { cast_body(x, y, n); }
extern "C" __global__ void cast_f32_f16(const float* x, f16* y, long long n) { cast_body(x, y, n); }
extern "C" __global__ void cast_bf16_f32(const bf16* x, float* y, long long n) { cast_body(x, y, n); }
extern "C" __global__ void cast_f16_f32(const f16* x, float* y, long long n) { cast_body(x, y, n); }

// ---- launch: engine/cuda/kernels/cast.rs (1-D, 256 threads, enough blocks to cover n) ---------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(cast) {
    SHIM_REGISTER(cast_f32_bf16);
    SHIM_REGISTER(cast_f32_f16);
    SHIM_REGISTER(cast_bf16_f32);
    SHIM_REGISTER(cast_f16_f32);
}
#endif
