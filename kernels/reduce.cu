// reduce.cu: the fixed-order reductions that make parameter gradients deterministic.
//
// colsum_accumulate: out[j] += sum over c < chunks of partial[c, j] (partial f32 [chunks, n],
// row-major), summed in chunk order by one thread per column, so the result is the same
// whatever order the blocks that wrote the partials ran in. ACCUMULATES into out (parameter
// gradients accumulate across micro-batches).
//
// sumsq_multi_f32: the squares of many f32 tensors (the gradients of a training step, for the
// global-norm clip) summed per block of SUMSQ_ITEMS * 256 elements of one tensor into
// partial[block] (OVERWRITTEN). A table of SumsqTensor descriptors (device memory, as
// adamw.cu's) gives each tensor's address, length and first block, so one launch covers every
// tensor; the launcher adds the partials in block order in f64 on the host, so the norm does not
// depend on scheduling.
#include "common.cuh"

struct SumsqTensor {
    const float* x;
    long long n;
    long long first_block;
};

#define SUMSQ_ITEMS 4  // elements per thread: a block covers 1024 elements

// ---- kernels ---------------------------------------------------------------------------------
// Adjacent threads own adjacent columns: each partial row is read coalesced.
extern "C" __global__ void __launch_bounds__(256)
    colsum_accumulate_f32(const float* __restrict__ partial, int chunks, long long n, float* __restrict__ out) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float s = 0.0f;
    for (int c = 0; c < chunks; c++) s += partial[(long long)c * n + j];
    out[j] += s;
}

// A block finds its tensor with tensor_of_block (common.cuh), as adamw_f32 does.
extern "C" __global__ void __launch_bounds__(256)
    sumsq_multi_f32(const SumsqTensor* __restrict__ tensors, int count, float* __restrict__ partial) {
    __shared__ float scratch[32];
    long long blk = blockIdx.x;
    SumsqTensor t = tensors[tensor_of_block(tensors, count, blk)];
    long long base = (blk - t.first_block) * (long long)blockDim.x * SUMSQ_ITEMS;
    float s = 0.0f;
    for (int k = 0; k < SUMSQ_ITEMS; k++) {
        long long i = base + (long long)k * blockDim.x + threadIdx.x;  // coalesced sweeps
        if (i < t.n) s += t.x[i] * t.x[i];
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[blk] = s;
}

// ---- launch: engine/cuda/kernels/reduce.rs ------------------------------------------------------
// colsum_accumulate: 256 threads, ceil(n / 256) blocks. sumsq_multi: 256 threads, the sum over
// tensors of ceil(n / 1024) blocks.
#ifdef POLYADAPT_SHIM
SHIM_MODULE(reduce) {
    SHIM_REGISTER(colsum_accumulate_f32);
    SHIM_REGISTER(sumsq_multi_f32);
}
#endif
