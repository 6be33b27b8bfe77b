// Shared device helpers for every kernel file: element types and their conversions, warp and
// block reductions, and the counter-based random numbers of engine/rng.rs.
//
// No standard headers: the same text compiles with nvcc, with NVRTC (which has none) and with
// the host C++ compiler through kernels/shim/cuda_shim.h. 16-bit floats are raw bit patterns
// (`bf16`, `f16` below) converted by hand, so that no cuda_bf16.h is needed and the rounding is
// the same everywhere (round to nearest even, as the `half` crate on the CPU side).
//
// PA_TENSOR_CORES is defined only by a device compile for sm_80 or newer: the tensor-core
// (mma.sync) paths are behind it. The host shim never defines it.
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define PA_TENSOR_CORES 1
#endif

#ifndef POLYADAPT_SHIM
#define PA_INFINITY __int_as_float(0x7f800000)
#else
#define PA_INFINITY INFINITY
#endif

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

// ---- element types -----------------------------------------------------------------------------
struct bf16 {
    u16 bits;
};
struct f16 {
    u16 bits;
};

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((u32)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16 x) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
#else
    u32 sign = (u32)(x.bits & 0x8000u) << 16, exp = (x.bits >> 10) & 0x1f, man = x.bits & 0x3ffu;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));  // inf, nan
    if (exp == 0) {
        if (man == 0) return __uint_as_float(sign);
        // subnormal: man * 2^-24, exact in f32
        float f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}

__device__ __forceinline__ u16 f32_to_bf16_bits(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);  // quiet nan
    u += 0x7fffu + ((u >> 16) & 1u);                                       // round to nearest even
    return (u16)(u >> 16);
}

__device__ __forceinline__ u16 f32_to_f16_bits(float f) {
#if defined(__CUDA_ARCH__)
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    u32 u = __float_as_uint(f);
    u32 sign = (u >> 16) & 0x8000u;
    u32 a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (u16)(sign | 0x7e00u);  // nan
    if (a >= 0x477ff000u) return (u16)(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (a < 0x38800000u) {
        // subnormal or zero in f16: the value in units of 2^-24, rounded to nearest even
        if (a <= 0x33000000u) return (u16)sign;  // at most half the smallest subnormal: ties to 0
        // value = man * 2^(e - 150) with the implicit bit in man; in units of 2^-24 that is
        // man >> (126 - e), 14 to 24 places for the exponents that reach here
        u32 e = a >> 23, man = (a & 0x7fffffu) | 0x800000u;
        u32 shift = 126u - e;
        u32 q = man >> shift, rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (u16)(sign | q);
    }
    u32 base = a - 0x38000000u;  // rebias exponent 127 -> 15 (in place, bits 23+)
    u32 q = base >> 13, rem = base & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
    return (u16)(sign | q);
#endif
}

template <typename T>
struct Convert;
template <>
struct Convert<float> {
    static __device__ __forceinline__ float from(float x) { return x; }
};
template <>
struct Convert<bf16> {
    static __device__ __forceinline__ bf16 from(float x) {
        bf16 r;
        r.bits = f32_to_bf16_bits(x);
        return r;
    }
};
template <>
struct Convert<f16> {
    static __device__ __forceinline__ f16 from(float x) {
        f16 r;
        r.bits = f32_to_f16_bits(x);
        return r;
    }
};
template <typename T>
__device__ __forceinline__ T from_f32(float x) {
    return Convert<T>::from(x);
}

// Multi-tensor launches (adamw.cu, reduce.cu): tensor k owns the blocks from
// tensors[k].first_block on, in increasing order; the tensor of block `blk` by binary search.
template <class Tensor>
__device__ __forceinline__ int tensor_of_block(const Tensor* tensors, int count, long long blk) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (tensors[mid].first_block <= blk) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// ---- reductions ----------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call ends with a barrier, so the same scratch
// may be reused by the next call.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : -PA_INFINITY;
    t = warp_max(t);
    __syncthreads();
    return t;
}

// ---- counter-based random numbers (engine/rng.rs, bit for bit) ---------------------------------
__device__ __forceinline__ u64 pa_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ u64 pa_bits(u64 seed, u64 stream, u64 index) {
    u64 a = pa_mix64(seed ^ 0x9e3779b97f4a7c15ull);
    u64 b = pa_mix64(a ^ (stream * 0xd1b54a32d192ed03ull));
    return pa_mix64(b ^ (index * 0x9e3779b97f4a7c15ull));
}
// Uniform in [0, 1) with 24 random bits: exactly rng::uniform.
__device__ __forceinline__ float pa_uniform(u64 seed, u64 stream, u64 index) {
    return (float)(u32)(pa_bits(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
