// embedding.cu: token embedding lookup with soft-prompt concatenation, and its backward.
//
// Layout: B sequences of packed token ids (ids int [ntok], sequence b owns tokens
// offsets[b]..offsets[b+1]; a padded batch is offsets b*T); soft prompt f32 [P, d] (trainable;
// P may be 0); table T [vocab, d] (frozen or trainable); output T [ntok + B*P, d], where
// sequence b occupies rows offsets[b] + b*P onward: its P prompt rows, then its tokens
// ("prompt injection": the prompt is concatenated in front of every input).
// Forward: out = [prompt ; table[ids]] per sequence, OVERWRITTEN.
// Backward: dprompt[p] += sum over sequences of dout[prompt row p of that sequence] (summed in
// sequence order), ACCUMULATED. dtable[v] += sum of dout rows of the tokens with id v,
// ACCUMULATED; the launcher groups the positions by id on the host (rows[k] for
// k in starts[u]..starts[u+1] are the output rows of id ids_u[u]), so that each table row is
// summed by one block in position order: deterministic, and no atomics. Ids must be < vocab.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
// One block per output row; threads over the columns (coalesced row copies).
template <typename T>
__device__ __forceinline__ void embed_fwd(const T* __restrict__ table, const int* __restrict__ ids,
                                          const int* __restrict__ offsets, const float* __restrict__ prompt,
                                          T* __restrict__ out, int batch, int p, int d) {
    int r = blockIdx.x;
    // The sequence of output row r: the last b with offsets[b] + b*P <= r (binary search).
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (offsets[mid] + mid * p <= r) lo = mid;
        else hi = mid - 1;
    }
    int local = r - (offsets[lo] + lo * p);
    T* o = out + (long long)r * d;
    if (local < p) {
        const float* src = prompt + (long long)local * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = from_f32<T>(src[j]);
    } else {
        const T* src = table + (long long)ids[offsets[lo] + local - p] * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = src[j];
    }
}

// dprompt: one thread per element of [P, d], summing the B sequences in order.
template <typename T>
__device__ __forceinline__ void embed_bwd_prompt(const T* __restrict__ dout, const int* __restrict__ offsets,
                                                 float* __restrict__ dprompt, int batch, int p, int d) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p * d) return;
    int k = (int)(i / d), j = (int)(i % d);
    float s = 0.0f;
    for (int b = 0; b < batch; b++) s += to_f32(dout[((long long)offsets[b] + (long long)b * p + k) * d + j]);
    dprompt[i] += s;
}

// dtable: one block per distinct id; threads over the columns.
template <typename T>
__device__ __forceinline__ void embed_bwd_table(const T* __restrict__ dout, const int* __restrict__ uniq,
                                                const int* __restrict__ starts, const int* __restrict__ rows,
                                                float* __restrict__ dtable, int d) {
    int u = blockIdx.x;
    float* dst = dtable + (long long)uniq[u] * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float s = 0.0f;
        for (int k = starts[u]; k < starts[u + 1]; k++) s += to_f32(dout[(long long)rows[k] * d + j]);
        dst[j] += s;
    }
}

#define EMB_KERNELS(T, S)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128)                                                           \
        embedding_fwd_##S(const T* table, const int* ids, const int* offsets, const float* prompt, T* out,      \
                          int batch, int p, int d) {                                                            \
        embed_fwd<T>(table, ids, offsets, prompt, out, batch, p, d);                                            \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        embedding_bwd_prompt_##S(const T* dout, const int* offsets, float* dprompt, int batch, int p, int d) {  \
        embed_bwd_prompt<T>(dout, offsets, dprompt, batch, p, d);                                               \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(128)                                                           \
        embedding_bwd_table_##S(const T* dout, const int* uniq, const int* starts, const int* rows,             \
                                float* dtable, int d) {                                                         \
        embed_bwd_table<T>(dout, uniq, starts, rows, dtable, d);                                                \
    }
EMB_KERNELS(float, f32)
EMB_KERNELS(bf16, bf16)
EMB_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/embedding.rs -----------------------------------------------------
// fwd: one 128-thread block per output row; bwd_prompt: 256 threads over P*d; bwd_table: one
// 128-thread block per distinct id.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(embedding) {
#define REG(S)                             \
    SHIM_REGISTER(embedding_fwd_##S);      \
    SHIM_REGISTER(embedding_bwd_prompt_##S); \
    SHIM_REGISTER(embedding_bwd_table_##S);
    REG(f32) REG(bf16) REG(f16)
#undef REG
}
#endif
