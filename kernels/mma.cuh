// mma.cuh: the warp-level tensor-core product D = A B + C of shape m16n8k16 (bf16 or f16
// inputs, f32 accumulators), and its register fragment layout.
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 and t = lane % 4, each 32-bit register holding two consecutive elements
// (the lower index in the low half):
//   A (16 x 16, row-major): a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
//                           a[2] = A[g][2t+8..+9],   a[3] = A[g+8][2t+8..+9]
//   B (16 x 8, "col": k contiguous for each n): b[0] = B[2t..2t+1][g], b[1] = B[2t+8..+9][g]
//   C, D (16 x 8, f32): c[0], c[1] = C[g][2t], C[g][2t+1]; c[2], c[3] = C[g+8][2t], C[g+8][2t+1]
//
// On sm_80+ (PA_TENSOR_CORES) this is one mma.sync instruction (HMMA in the machine code). In
// the host shim it is emulated with those layouts: the lanes exchange their fragments through
// a warp collective and each lane computes its own four outputs in f32, so the tiling, masking
// and fragment bookkeeping of a tensor-core kernel are tested on the CPU too; only the
// instruction itself waits for a GPU.
#pragma once
#include "common.cuh"

template <typename T>
struct MmaType;
template <>
struct MmaType<bf16> {
    static __device__ __forceinline__ u16 bits(float x) { return f32_to_bf16_bits(x); }
    static __device__ __forceinline__ float value(u16 b) {
        bf16 h;
        h.bits = b;
        return to_f32(h);
    }
};
template <>
struct MmaType<f16> {
    static __device__ __forceinline__ u16 bits(float x) { return f32_to_f16_bits(x); }
    static __device__ __forceinline__ float value(u16 b) {
        f16 h;
        h.bits = b;
        return to_f32(h);
    }
};

// Two values as one register of T (lo in the low half).
template <typename T>
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    return (u32)MmaType<T>::bits(lo) | ((u32)MmaType<T>::bits(hi) << 16);
}
template <typename T>
__device__ __forceinline__ float lo_of(u32 r) {
    return MmaType<T>::value((u16)(r & 0xffffu));
}
template <typename T>
__device__ __forceinline__ float hi_of(u32 r) {
    return MmaType<T>::value((u16)(r >> 16));
}

template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const u32 a[4], const u32 b[2]);

#if defined(PA_TENSOR_CORES)
template <>
__device__ __forceinline__ void mma16816<bf16>(float c[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16816<f16>(float c[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#elif defined(POLYADAPT_SHIM)
template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const u32 a[4], const u32 b[2]) {
    u32 mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    u32 all[32][6];
    shim::warp_exchange(mine, sizeof mine, 0, nullptr, all);
    // Rebuild A (16 x 16) and B (16 x 8) from every lane's fragments.
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        const u32* f = all[l];
        A[g][2 * t] = lo_of<T>(f[0]);
        A[g][2 * t + 1] = hi_of<T>(f[0]);
        A[g + 8][2 * t] = lo_of<T>(f[1]);
        A[g + 8][2 * t + 1] = hi_of<T>(f[1]);
        A[g][2 * t + 8] = lo_of<T>(f[2]);
        A[g][2 * t + 9] = hi_of<T>(f[2]);
        A[g + 8][2 * t + 8] = lo_of<T>(f[3]);
        A[g + 8][2 * t + 9] = hi_of<T>(f[3]);
        B[2 * t][g] = lo_of<T>(f[4]);
        B[2 * t + 1][g] = hi_of<T>(f[4]);
        B[2 * t + 8][g] = lo_of<T>(f[5]);
        B[2 * t + 9][g] = hi_of<T>(f[5]);
    }
    int lane = shim::lane_id(), g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        int row = i < 2 ? g : g + 8, col = 2 * t + (i & 1);
        float s = 0.0f;
        for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
        c[i] += s;
    }
}
#else
// A device compile below sm_80 (never launched: the launchers require sm_80 for this path).
template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const u32 a[4], const u32 b[2]) {}
#endif
