// lora_common.cuh: what the LoRA kernels (lora.cu, the scalar path, and lora_mma.cu, the
// tensor-core path) share: the parameter block and the dropout mask. The contract is in
// lora.cu's head comment.
#pragma once
#include "common.cuh"

// One parameter block for the fused kernels (both files), passed by value. Must match
// engine/cuda/kernels/lora.rs (LoraParams, repr C): checked by size on both sides.
struct LoraParams {
    const void* in;      // [n, K] T: x (forward, K = din) or dY (backward, K = dout)
    const void* w;       // [dout, din] T, frozen
    const float* bias;   // [dout] or null (forward only)
    const float* u_mat;  // forward A [r, din]; backward B [dout, r]
    const float* v_mat;  // forward B [dout, r]; backward A [r, din]
    void* out;           // [n, N] T: y (N = dout) or dX (N = din); null: only the projection
    float* u_out;        // [n, r]: h (forward) or g (backward); null: not written
    u64 seed, stream;    // LoRA dropout
    float scale;         // s = alpha / r
    float drop_p;        // 0: no dropout
    float drop_scale;    // 1 / (1 - p), rounded from f64 as the CPU does
    int n, din, dout, r, pad_;
};
static_assert(sizeof(LoraParams) == 104, "LoraParams must match engine/cuda/kernels/lora.rs");

// The dropout factor of x's element `index` (0 or 1 / (1 - p)).
__device__ __forceinline__ float lora_keep(const LoraParams& P, long long index) {
    return pa_uniform(P.seed, P.stream, (u64)index) >= P.drop_p ? P.drop_scale : 0.0f;
}

