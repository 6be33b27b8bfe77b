// reduce.cu: the fixed-order reductions that make parameter gradients deterministic.
//
// colsum_accumulate: out[j] += sum over c < chunks of partial[c, j] (partial f32 [chunks, n],
// row-major), summed in chunk order by one thread per column, so the result is the same
// whatever order the blocks that wrote the partials ran in. ACCUMULATES into out (parameter
// gradients accumulate across micro-batches).
#include "common.cuh"

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

// ---- launch: engine/cuda/kernels/reduce.rs (256 threads, ceil(n / 256) blocks) ---------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(reduce) { SHIM_REGISTER(colsum_accumulate_f32); }
#endif
