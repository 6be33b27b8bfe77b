// adamw.cu: AdamW over many parameter tensors in one launch.
//
// For every element of every tensor (f32 parameter p, gradient g, moments m, v), in the order
// of torch.optim.AdamW (single-tensor, non-fused implementation):
//   g   = g * grad_scale                 (1, or the factor of gradient clipping/averaging)
//   p   = p * (1 - lr * weight_decay)    (decoupled weight decay, applied first)
//   m   = m + (1 - beta1) * (g - m)      (torch: exp_avg.lerp_(grad, 1 - beta1))
//   v   = v * beta2 + (1 - beta2) * g * g
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p   = p - (lr / (1 - beta1^t)) * (m / denom)
// The launcher computes step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) on the
// host (in f64, rounded once), as torch does with Python floats. p, m, v are updated in place;
// g is only read. All tensors share one launch: a table of AdamTensor descriptors (device
// memory) gives each tensor's buffers, its length and the first block that works on it, and a
// block finds its tensor by binary search, so a step over hundreds of small LoRA/prefix
// tensors costs one launch, not hundreds.
#include "common.cuh"

struct AdamTensor {
    float* p;
    const float* g;
    float* m;
    float* v;
    long long n;
    long long first_block;
};

#define ADAM_ITEMS 4  // elements per thread: a block covers 1024 elements

// ---- kernels ---------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
    adamw_f32(const AdamTensor* __restrict__ tensors, int count, float lr, float beta1, float beta2, float eps,
              float weight_decay, float step_size, float bc2_sqrt, float grad_scale) {
    long long blk = blockIdx.x;
    AdamTensor t = tensors[tensor_of_block(tensors, count, blk)];
    long long base = (blk - t.first_block) * (long long)blockDim.x * ADAM_ITEMS;
    float decay = 1.0f - lr * weight_decay;
    for (int k = 0; k < ADAM_ITEMS; k++) {
        // Strided by the block size so that each pass is one coalesced sweep.
        long long i = base + (long long)k * blockDim.x + threadIdx.x;
        if (i >= t.n) break;
        float g = t.g[i] * grad_scale;
        float p = t.p[i] * decay;
        float m = t.m[i];
        m = m + (1.0f - beta1) * (g - m);
        float v = t.v[i] * beta2 + (1.0f - beta2) * (g * g);
        float denom = sqrtf(v) / bc2_sqrt + eps;
        t.p[i] = p - step_size * (m / denom);
        t.m[i] = m;
        t.v[i] = v;
    }
}

// ---- launch: engine/cuda/kernels/adamw.rs (256 threads; sum over tensors of ceil(n / 1024) blocks)
#ifdef POLYADAPT_SHIM
SHIM_MODULE(adamw) { SHIM_REGISTER(adamw_f32); }
#endif
