// activation.cu: GELU (erf and tanh forms) and SwiGLU, forward and backward.
//
// Computes element-wise over flat buffers of n elements of T (f32/bf16/f16; math in f32):
//   gelu_erf:  y = 0.5 x (1 + erf(x / sqrt 2))                    ("gelu" in HF configs)
//   gelu_tanh: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ("gelu_new", "gelu_pytorch_tanh")
//   swiglu:    y = silu(gate) * up, silu(g) = g / (1 + exp(-g))     (LLaMA MLP)
// Backward keeps the activation's input (cheaper than the derivative) and recomputes:
//   gelu: dx = dy * gelu'(x); swiglu: dgate = dy * up * silu'(gate), dup = dy * silu(gate).
// All outputs are activations or activation gradients: OVERWRITTEN. dgate/dup may be null
// (not needed). The formulas are those of engine/cpu/activation.rs, including the guard that
// keeps a saturated tanh from turning 0 * inf into NaN.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
__device__ __forceinline__ void gelu_and_grad(bool tanh_form, float x, float* y, float* dy) {
    if (!tanh_form) {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        *y = x * cdf;
        *dy = cdf + x * pdf;
    } else {
        const float k = 0.79788456080286536f, c = 0.044715f;
        float t = tanhf(k * (x + c * x * x * x));
        float sech2 = 1.0f - t * t;
        float inner = sech2 == 0.0f ? 0.0f : 0.5f * x * sech2 * k * (1.0f + 3.0f * c * x * x);
        *y = 0.5f * x * (1.0f + t);
        *dy = 0.5f * (1.0f + t) + inner;
    }
}

__device__ __forceinline__ void silu_and_grad(float g, float* y, float* dy) {
    float s = 1.0f / (1.0f + expf(-g));  // exp overflow gives s = 0 exactly: never NaN
    *y = g * s;
    *dy = s * (1.0f + g * (1.0f - s));
}

// Grid-stride loops; each element is independent.
template <typename T, bool TANH>
__device__ __forceinline__ void gelu_fwd(const T* __restrict__ x, T* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v, d;
        gelu_and_grad(TANH, to_f32(x[i]), &v, &d);
        y[i] = from_f32<T>(v);
    }
}
template <typename T, bool TANH>
__device__ __forceinline__ void gelu_bwd(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                                         long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v, d;
        gelu_and_grad(TANH, to_f32(x[i]), &v, &d);
        dx[i] = from_f32<T>(to_f32(dy[i]) * d);
    }
}
template <typename T>
__device__ __forceinline__ void swiglu_fwd(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y,
                                           long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float s, d;
        silu_and_grad(to_f32(gate[i]), &s, &d);
        y[i] = from_f32<T>(s * to_f32(up[i]));
    }
}
template <typename T>
__device__ __forceinline__ void swiglu_bwd(const T* __restrict__ gate, const T* __restrict__ up,
                                           const T* __restrict__ dy, T* __restrict__ dgate, T* __restrict__ dup,
                                           long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float s, d, g = to_f32(dy[i]);
        silu_and_grad(to_f32(gate[i]), &s, &d);
        if (dgate) dgate[i] = from_f32<T>(g * to_f32(up[i]) * d);
        if (dup) dup[i] = from_f32<T>(g * s);
    }
}

#define ACT_KERNELS(T, S)                                                                                     \
    extern "C" __global__ void gelu_erf_fwd_##S(const T* x, T* y, long long n) { gelu_fwd<T, false>(x, y, n); } \
    extern "C" __global__ void gelu_tanh_fwd_##S(const T* x, T* y, long long n) { gelu_fwd<T, true>(x, y, n); } \
    extern "C" __global__ void gelu_erf_bwd_##S(const T* x, const T* dy, T* dx, long long n) {                \
        gelu_bwd<T, false>(x, dy, dx, n);                                                                     \
    }                                                                                                         \
    extern "C" __global__ void gelu_tanh_bwd_##S(const T* x, const T* dy, T* dx, long long n) {               \
        gelu_bwd<T, true>(x, dy, dx, n);                                                                      \
    }                                                                                                         \
    extern "C" __global__ void swiglu_fwd_##S(const T* gate, const T* up, T* y, long long n) {                \
        swiglu_fwd<T>(gate, up, y, n);                                                                        \
    }                                                                                                         \
    extern "C" __global__ void swiglu_bwd_##S(const T* gate, const T* up, const T* dy, T* dgate, T* dup,      \
                                              long long n) {                                                  \
        swiglu_bwd<T>(gate, up, dy, dgate, dup, n);                                                           \
    }

ACT_KERNELS(float, f32)
ACT_KERNELS(bf16, bf16)
ACT_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/activation.rs (1-D, 256 threads, up to 4096 blocks) -----------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(activation) {
#define REG(S)                         \
    SHIM_REGISTER(gelu_erf_fwd_##S);   \
    SHIM_REGISTER(gelu_tanh_fwd_##S);  \
    SHIM_REGISTER(gelu_erf_bwd_##S);   \
    SHIM_REGISTER(gelu_tanh_bwd_##S);  \
    SHIM_REGISTER(swiglu_fwd_##S);     \
    SHIM_REGISTER(swiglu_bwd_##S);
    REG(f32) REG(bf16) REG(f16)
#undef REG
}
#endif
