// attention_mma.cu: attention with prefix keys on the tensor cores (mma.sync m16n8k16, sm_80+),
// bf16/f16 inputs with f32 accumulation. Computes exactly what attention.cu's head comment
// says (same AttnParams, same visibility, dropout and lse), for D = 32, 64, 128; this file
// holds the forward; the backward runs the scalar kernels of attention.cu (kernels/NOTES.md).
// The host shim runs this file too, with mma.cuh's emulation of the instruction, so the tests
// check its tiling, masking and fragment layouts on the CPU; tests/cuda_machine_code.rs checks
// that the machine code for sm_80 and sm_90 holds HMMA instructions.
//
// Forward, flash-attention 2 style: a block of 4 warps takes 64 queries of one (sequence,
// head), each warp 16 of them, with the warp's Q fragments in registers for the whole kernel.
// Key/value tiles of 64 rows of [prefix ; sequence] go through shared memory: K as stored
// (rows of D, the B operand of S = Q K^T wants d contiguous per key) and V transposed (the B
// operand of O = P V wants keys contiguous per d). Rows are padded by 8 elements (16 bytes)
// so that the 8 x 4 lanes reading a fragment hit 32 different banks. Per tile, S stays in
// registers: masked, scaled, online softmax (row max and sum reduced over the 4 lanes of a
// quad), the probabilities rounded to T become the A operand of P V directly from the S
// accumulator layout (two 8-key S tiles make one 16-key A fragment), and O is rescaled and
// accumulated in registers. out (T) and lse (f32) OVERWRITTEN.
#include "attention_common.cuh"
#include "mma.cuh"

#define MMA_BQ 64  // queries per block: 4 warps x 16
#define MMA_BK 64  // keys per tile

// ---- kernels ---------------------------------------------------------------------------------
template <typename T, int D>
__device__ __forceinline__ void attn_fwd_mma(const AttnParams& P) {
    constexpr int KP = D + 8, VP = MMA_BK + 8;  // padded row lengths (elements)
    __shared__ __align__(16) u16 sK[MMA_BK * KP];
    __shared__ __align__(16) u16 sVt[D * VP];
    const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    if (tile * MMA_BQ >= nq) return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int gh = h / (P.heads / P.kv_heads), L = P.prefix + nk;
    const long long qs = (long long)P.heads * D, kvs = (long long)P.kv_heads * D;
    // This lane's two query rows (local to the sequence): g and g + 8 of the warp's 16.
    const int r0 = tile * MMA_BQ + warp * 16 + g, r1 = r0 + 8;

    // Q fragments for the D / 16 k-steps of S = Q K^T, loaded once.
    u32 qa[D / 16][4];
    {
        const u32* q = (const u32*)P.q;  // pairs of T
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            int c = ks * 16 + 2 * t4;
            long long o0 = ((q0 + r0) * qs + h * D + c) >> 1, o1 = ((q0 + r1) * qs + h * D + c) >> 1;
            qa[ks][0] = r0 < nq ? q[o0] : 0u;
            qa[ks][1] = r1 < nq ? q[o1] : 0u;
            qa[ks][2] = r0 < nq ? q[o0 + 4] : 0u;
            qa[ks][3] = r1 < nq ? q[o1 + 4] : 0u;
        }
    }
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-PA_INFINITY, -PA_INFINITY}, l[2] = {0.0f, 0.0f};

    for (int kt = 0; kt < L; kt += MMA_BK) {
        __syncthreads();  // the previous tile is consumed
        // K rows as pairs (coalesced 4-byte loads), V transposed element by element.
        for (int i = tid; i < MMA_BK * (D / 2); i += blockDim.x) {
            int r = i / (D / 2), c = 2 * (i % (D / 2)), j = kt + r;
            u32 kk = 0, vv = 0;
            if (j < P.prefix) {
                long long off = (j * kvs + gh * D + c) >> 1;
                kk = ((const u32*)P.pk)[off];
                vv = ((const u32*)P.pv)[off];
            } else if (j < L) {
                long long off = ((k0 + j - P.prefix) * kvs + gh * D + c) >> 1;
                kk = ((const u32*)P.k)[off];
                vv = ((const u32*)P.v)[off];
            }
            *(u32*)&sK[r * KP + c] = kk;
            sVt[c * VP + r] = (u16)(vv & 0xffffu);
            sVt[(c + 1) * VP + r] = (u16)(vv >> 16);
        }
        __syncthreads();

        // S = Q K^T for this warp's 16 rows and the 64 keys: 8 tiles of 16 x 8.
        float s[MMA_BK / 8][4];
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
                const u16* kr = &sK[(n * 8 + g) * KP + ks * 16 + 2 * t4];
                u32 bb[2] = {*(const u32*)kr, *(const u32*)(kr + 8)};
                mma16816<T>(s[n], qa[ks], bb);
            }
        }
        // Scale and mask; the tile maximum of each of the two rows.
        float mt[2] = {-PA_INFINITY, -PA_INFINITY};
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int row = e < 2 ? r0 : r1, j = kt + n * 8 + 2 * t4 + (e & 1);
                bool vis = j < L && (j < P.prefix || attn_visible(P, k0, nq, nk, row, j - P.prefix));
                s[n][e] = vis ? s[n][e] * P.scale : -PA_INFINITY;
                mt[e >> 1] = fmaxf(mt[e >> 1], s[n][e]);
            }
        }
        float corr[2];
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            // The quad's 4 lanes hold the row's 64 scores between them.
            mt[rr] = fmaxf(mt[rr], __shfl_xor_sync(0xffffffffu, mt[rr], 1));
            mt[rr] = fmaxf(mt[rr], __shfl_xor_sync(0xffffffffu, mt[rr], 2));
            float mn = fmaxf(m[rr], mt[rr]);
            corr[rr] = mn == -PA_INFINITY ? 1.0f : expf(m[rr] - mn);
            m[rr] = mn;
            l[rr] *= corr[rr];
        }
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        // Probabilities (undropped into the normaliser, dropped into the product), as the A
        // operand of P V: S tiles 2k and 2k+1 are the 16 keys of k-step k.
        u32 pa[MMA_BK / 16][4];
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; n++) {
            float pe[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int rr = e >> 1, row = rr ? r1 : r0, j = kt + n * 8 + 2 * t4 + (e & 1);
                float p = s[n][e] == -PA_INFINITY ? 0.0f : expf(s[n][e] - m[rr]);
                l[rr] += p;
                pe[e] = p == 0.0f ? 0.0f : p * attn_keep(P, h, q0 + row, j);
            }
            pa[n >> 1][(n & 1) * 2 + 0] = pack2<T>(pe[0], pe[1]);
            pa[n >> 1][(n & 1) * 2 + 1] = pack2<T>(pe[2], pe[3]);
        }
        // O += P V over the tile's 64 keys (4 k-steps) for the D / 8 output tiles.
#pragma unroll
        for (int ks = 0; ks < MMA_BK / 16; ks++) {
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const u16* vr = &sVt[(n * 8 + g) * VP + ks * 16 + 2 * t4];
                u32 bb[2] = {*(const u32*)vr, *(const u32*)(vr + 8)};
                mma16816<T>(o[n], pa[ks], bb);
            }
        }
    }
    // Normalise: the row sums are spread over the quad.
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
    }
    float inv0 = l[0] > 0.0f ? 1.0f / l[0] : 0.0f, inv1 = l[1] > 0.0f ? 1.0f / l[1] : 0.0f;
    u32* out = (u32*)P.out;
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
        int c = n * 8 + 2 * t4;
        if (r0 < nq) out[((q0 + r0) * qs + h * D + c) >> 1] = pack2<T>(o[n][0] * inv0, o[n][1] * inv0);
        if (r1 < nq) out[((q0 + r1) * qs + h * D + c) >> 1] = pack2<T>(o[n][2] * inv1, o[n][3] * inv1);
    }
    if (t4 == 0) {
        if (r0 < nq) P.lse[(long long)h * P.q_rows + q0 + r0] = l[0] > 0.0f ? m[0] + logf(l[0]) : -PA_INFINITY;
        if (r1 < nq) P.lse[(long long)h * P.q_rows + q0 + r1] = l[1] > 0.0f ? m[1] + logf(l[1]) : -PA_INFINITY;
    }
}

#define MMA_KERNELS(T, S)                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) attn_fwd_mma_##S##_d32(AttnParams P) {                   \
        attn_fwd_mma<T, 32>(P);                                                                                \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) attn_fwd_mma_##S##_d64(AttnParams P) {                   \
        attn_fwd_mma<T, 64>(P);                                                                                \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) attn_fwd_mma_##S##_d128(AttnParams P) {                  \
        attn_fwd_mma<T, 128>(P);                                                                               \
    }
MMA_KERNELS(bf16, bf16)
MMA_KERNELS(f16, f16)

// ---- launch: engine/cuda/kernels/attention.rs (grid (ceil(max queries / 64), heads, batch), 128
// threads) ----------------------------------------------------------------------------------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(attention_mma) {
    SHIM_REGISTER(attn_fwd_mma_bf16_d32);
    SHIM_REGISTER(attn_fwd_mma_bf16_d64);
    SHIM_REGISTER(attn_fwd_mma_bf16_d128);
    SHIM_REGISTER(attn_fwd_mma_f16_d32);
    SHIM_REGISTER(attn_fwd_mma_f16_d64);
    SHIM_REGISTER(attn_fwd_mma_f16_d128);
}
#endif
