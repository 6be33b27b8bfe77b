// cross_entropy.cu: softmax cross-entropy fused with its gradient.
//
// Computes, per row i of logits[n, c] (T = f32/bf16/f16, math in f32) with target t_i (i64;
// -100 = ignored, as PyTorch's ignore_index):
//   loss[i] = lse_i - logits[i, t_i],  lse_i = log sum_j exp(logits[i, j])   (0 when ignored)
//   dlogits[i, j] = scale * (softmax(logits_i)_j - [j == t_i])              (0 when ignored)
// where `scale` is the upstream gradient of the mean loss over the counted rows (g / count,
// from the launcher, which counts the targets on the host). One kernel gives the loss and the
// gradient: the logits (the largest activation of a language model: vocab x tokens) are read
// three times from L2 instead of being kept for a backward pass. loss is f32 [n], OVERWRITTEN;
// dlogits (may be null: loss only) is T [n, c], OVERWRITTEN, and may alias logits (each
// thread reads an element before it writes it). Targets must lie in [0, c) or be -100.
#include "common.cuh"

// ---- kernels ---------------------------------------------------------------------------------
// One block of 256 threads per row: the vocabulary is long (30k to 250k), rows are few.
template <typename T>
__device__ __forceinline__ void ce_fused(const T* logits, const long long* __restrict__ targets, int c, float scale,
                                         float* __restrict__ loss, T* dlogits) {
    __shared__ float scratch[32];
    int row = blockIdx.x;
    const T* x = logits + (long long)row * c;
    long long t = targets[row];
    if (t == -100) {
        if (threadIdx.x == 0) loss[row] = 0.0f;
        if (dlogits)
            for (int j = threadIdx.x; j < c; j += blockDim.x) dlogits[(long long)row * c + j] = from_f32<T>(0.0f);
        return;
    }
    // Read before the barriers below: with dlogits aliasing logits, element t may be
    // overwritten by another thread once they have passed.
    float xt = threadIdx.x == 0 ? to_f32(x[t]) : 0.0f;
    float m = -PA_INFINITY;
    for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, to_f32(x[j]));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += expf(to_f32(x[j]) - m);
    s = block_sum(s, scratch);
    float log_sum = logf(s);
    if (threadIdx.x == 0) loss[row] = (m - xt) + log_sum;
    if (dlogits) {
        // Every thread has passed its reads of x above (block_sum ends with a barrier), so an
        // aliased dlogits is safe: each element below is read by the thread that writes it.
        T* dx = dlogits + (long long)row * c;
        for (int j = threadIdx.x; j < c; j += blockDim.x) {
            float p = expf((to_f32(x[j]) - m) - log_sum);
            dx[j] = from_f32<T>(scale * (p - (j == t ? 1.0f : 0.0f)));
        }
    }
}

#define CE_KERNELS(T, S)                                                                                        \
    extern "C" __global__ void __launch_bounds__(256)                                                           \
        cross_entropy_fused_##S(const T* logits, const long long* targets, int c, float scale, float* loss,     \
                                T* dlogits) {                                                                   \
        ce_fused<T>(logits, targets, c, scale, loss, dlogits);                                                  \
    }
CE_KERNELS(float, f32)
CE_KERNELS(bf16, bf16)
CE_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/cross_entropy.rs (n blocks of 256 threads) ---------------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(cross_entropy) {
    SHIM_REGISTER(cross_entropy_fused_f32);
    SHIM_REGISTER(cross_entropy_fused_bf16);
    SHIM_REGISTER(cross_entropy_fused_f16);
}
#endif
