// attention_common.cuh: what the attention kernels (attention.cu, the scalar path, and
// attention_mma.cu, the tensor-core path) share: the parameter block, which keys a query sees,
// and the dropout mask. The contract is in attention.cu's head comment.
#pragma once
#include "common.cuh"

// One parameter block for every attention kernel, passed by value. Element pointers are
// untyped: each kernel is instantiated for one element type T and casts. Layout must match
// engine/cuda/kernels/attention.rs (AttnParams, repr C): checked by size on both sides.
struct AttnParams {
    const void* q;        // [q_rows, heads * D]
    const void* k;        // [kv_rows, kv_heads * D]
    const void* v;        // [kv_rows, kv_heads * D]
    const void* pk;       // [prefix, kv_heads * D] (null when prefix == 0)
    const void* pv;       // [prefix, kv_heads * D]
    const int* q_off;     // [batch + 1] first query row of each sequence
    const int* k_off;     // [batch + 1] first key row of each sequence
    const float* key_mask;  // [kv_rows] 1 = real key, 0 = padding; null = all real
    void* out;            // [q_rows, heads * D]                      forward output
    float* lse;           // [heads, q_rows]                          forward output
    const void* dout;     // [q_rows, heads * D]                      backward input
    float* delta;         // [heads, q_rows] rowsum(dO * O)           backward scratch
    void* dq;             // [q_rows, heads * D]   null: not needed
    void* dk;             // [kv_rows, kv_heads * D]
    void* dv;
    float* dpk;           // [prefix, kv_heads * D] f32, accumulated (null: not needed)
    float* dpv;
    float* part_k;        // [batch, prefix, kv_heads * D] f32 per-sequence partials of dpk
    float* part_v;        //   and dpv (deterministic mode), or null: atomics into dpk, dpv
    u64 seed, stream;     // dropout
    float scale, drop_p;  // score scale; dropout probability (0: none)
    int batch, heads, kv_heads, head_dim, prefix, causal, q_rows, pad_;
};
static_assert(sizeof(AttnParams) == 208, "AttnParams must match engine/cuda/kernels/attention.rs");

// Whether query t (local index) of sequence b sees sequence key j (local index): the key is
// real and, if causal, j <= t + nk - nq (the causal mask aligned to the bottom right, as
// engine/cpu/attention/layout.rs). Prefix keys are always visible and not asked about here.
__device__ __forceinline__ bool attn_visible(const AttnParams& P, int k0, int nq, int nk, int t, int j) {
    if (P.key_mask && P.key_mask[k0 + j] == 0.0f) return false;
    return !P.causal || j + nq <= t + nk;
}

// Whether query t sees key j of [prefix ; sequence] (both local; t < nq, j < L checked here).
__device__ __forceinline__ bool attn_sees(const AttnParams& P, int k0, int nq, int nk, int L, int t, int j) {
    return t < nq && j < L && (j < P.prefix || attn_visible(P, k0, nq, nk, t, j - P.prefix));
}

// The dropout factor of probability (head h, absolute query row qrow, key j of
// [prefix ; sequence]): engine/cpu/attention/mod.rs AttnDims::keep_scale, bit for bit.
__device__ __forceinline__ float attn_keep(const AttnParams& P, int h, int qrow, int j) {
    if (P.drop_p <= 0.0f) return 1.0f;
    u64 index = ((u64)((long long)qrow * P.heads + h) << 32) | (u64)(u32)j;
    return pa_uniform(P.seed, P.stream, index) < P.drop_p ? 0.0f : 1.0f / (1.0f - P.drop_p);
}
