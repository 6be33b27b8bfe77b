// lora_mma.cu: the fused LoRA layer on the tensor cores (mma.sync m16n8k16, sm_80+), bf16/f16
// inputs with f32 accumulation. Computes what lora.cu's head comment says (same LoraParams,
// dropout, outputs), forward (y, h) and the fused backward (dX, g); the parameter gradients
// dA, dB are lora.cu's grad_a/grad_b (skinny sums over tokens, no matrix product to speak of).
//
// A block of 4 warps owns a 64 x 64 output tile, each warp 16 rows of it. The input's 64 x 32
// tiles go through shared memory once and serve both products: the frozen one (8 n-tiles of
// 16 x 8 per warp, f32 accumulators in registers) and the low-rank projection in U (R / 8
// n-tiles). The weight tile is stored n-major with k contiguous (the B operand's "col"
// layout): as W is for the forward (x W^T), transposed while loading for the backward (dY W).
// The LoRA matrices (f32 masters) are rounded to T in shared memory, and the projection's f32
// accumulators are rounded to T and reused in registers as the A operand of the second
// product (the accumulator layout of two 8-column tiles is the A layout of one 16-wide k-step),
// as flash-attention does with P. Rows padded by 8 elements: the 8 x 4 lanes reading a
// fragment hit 32 different banks. The host shim runs this file with the emulated instruction
// (mma.cuh); tests/cuda_machine_code.rs checks the machine code holds HMMA. R = 0 is the frozen
// layer alone, as in lora.cu: no projection, no low-rank term.
#include "lora_common.cuh"
#include "mma.cuh"

#define LMMA_BM 64  // output rows per block: 4 warps x 16
#define LMMA_BN 64  // output columns per block
#define LMMA_BK 32  // depth of a streamed tile: two k-steps

// ---- kernels ---------------------------------------------------------------------------------
template <typename T, int R, bool BWD>
__device__ __forceinline__ void lora_fused_mma(const LoraParams& P) {
    // RA: array extents (at R = 0 no loop reaches them); R1: a divisor in loops that do not run
    // at R = 0.
    constexpr int RA = R > 0 ? R : 16, R1 = R > 0 ? R : 1;
    constexpr int BM = LMMA_BM, BN = LMMA_BN, BK = LMMA_BK, KP = BK + 8, RP = RA + 8;
    __shared__ __align__(16) u16 sIn[BM * KP];   // input tile [row][k]
    __shared__ __align__(16) u16 sInD[BM * KP];  // the same, dropped (forward with dropout)
    __shared__ __align__(16) u16 sW[BN * KP];    // frozen weight tile [n][k]
    __shared__ __align__(16) u16 sU[RA * KP];    // U tile [q][k]
    __shared__ __align__(16) u16 sV[BN * RP];    // V tile [n][q]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int N = BWD ? P.din : P.dout, K = BWD ? P.dout : P.din;
    const bool base = P.out != nullptr;  // uniform over the grid
    const bool drop_in = !BWD && P.drop_p > 0.0f;
    const T* in = (const T*)P.in;
    const T* w = (const T*)P.w;
    const int wr = warp * 16;  // the warp's first row in the tile

    float acc[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float uacc[RA / 8][4];
#pragma unroll
    for (int n = 0; n < R / 8; n++) uacc[n][0] = uacc[n][1] = uacc[n][2] = uacc[n][3] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        __syncthreads();  // the previous tiles are consumed
        // Input tile, element by element (rows of any length, any alignment).
        for (int i = tid; i < BM * BK; i += blockDim.x) {
            const int r = i / BK, k = i % BK, m = m0 + r, kk = k0 + k;
            u16 bits = 0;
            if (m < P.n && kk < K) {
                bits = ((const u16*)in)[(long long)m * K + kk];
                if (drop_in) {
                    const float x = MmaType<T>::value(bits) * lora_keep(P, (long long)m * P.din + kk);
                    sInD[r * KP + k] = MmaType<T>::bits(x);
                }
            } else if (drop_in) {
                sInD[r * KP + k] = 0;
            }
            sIn[r * KP + k] = bits;
        }
        if (base) {
            for (int i = tid; i < BN * BK; i += blockDim.x) {
                u16 bits = 0;
                int c, k;
                if (!BWD) {  // W[n0 + c][k0 + k]: threads along k
                    c = i / BK, k = i % BK;
                    if (n0 + c < N && k0 + k < K) bits = ((const u16*)w)[(long long)(n0 + c) * P.din + k0 + k];
                } else {  // W[k0 + k][n0 + c]: threads along c, stored transposed
                    k = i / BN, c = i % BN;
                    if (n0 + c < N && k0 + k < K) bits = ((const u16*)w)[(long long)(k0 + k) * P.din + n0 + c];
                }
                sW[c * KP + k] = bits;
            }
        }
        for (int i = tid; i < R * BK; i += blockDim.x) {
            // forward: A[q][k0 + k]; backward: B[k0 + k][q]. Rounded to T.
            const int q = i / BK, k = i % BK, kk = k0 + k;
            float v = 0.0f;
            if (q < P.r && kk < K) v = BWD ? P.u_mat[(long long)kk * P.r + q] : P.u_mat[(long long)q * P.din + kk];
            sU[q * KP + k] = MmaType<T>::bits(v);
        }
        __syncthreads();
        const u16* lin = drop_in ? sInD : sIn;  // the low-rank path's input
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            const int kc = ks * 16 + 2 * t4;
            u32 a[4], al[4];
            a[0] = *(const u32*)&sIn[(wr + g) * KP + kc];
            a[1] = *(const u32*)&sIn[(wr + g + 8) * KP + kc];
            a[2] = *(const u32*)&sIn[(wr + g) * KP + kc + 8];
            a[3] = *(const u32*)&sIn[(wr + g + 8) * KP + kc + 8];
            al[0] = *(const u32*)&lin[(wr + g) * KP + kc];
            al[1] = *(const u32*)&lin[(wr + g + 8) * KP + kc];
            al[2] = *(const u32*)&lin[(wr + g) * KP + kc + 8];
            al[3] = *(const u32*)&lin[(wr + g + 8) * KP + kc + 8];
            if (base) {
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
                    const u16* wp = &sW[(n * 8 + g) * KP + kc];
                    u32 b[2] = {*(const u32*)wp, *(const u32*)(wp + 8)};
                    mma16816<T>(acc[n], a, b);
                }
            }
#pragma unroll
            for (int n = 0; n < R / 8; n++) {
                const u16* up = &sU[(n * 8 + g) * KP + kc];
                u32 b[2] = {*(const u32*)up, *(const u32*)(up + 8)};
                mma16816<T>(uacc[n], al, b);
            }
        }
    }
    // The projection (f32) out for the parameter gradients, from the first column block.
    const int r0 = m0 + wr + g, r1 = r0 + 8;
    if (blockIdx.x == 0 && P.u_out) {
#pragma unroll
        for (int n = 0; n < R / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = e < 2 ? r0 : r1, q = n * 8 + 2 * t4 + (e & 1);
                if (m < P.n && q < P.r) P.u_out[(long long)m * P.r + q] = uacc[n][e];
            }
        }
    }
    if (!base) return;  // the whole grid
    // V tile [n][q]: forward B[n0 + c][q]; backward A[q][n0 + c]. Rounded to T. (sV is not
    // touched by the loop above: no barrier needed before writing it.)
    if constexpr (R > 0) {  // (the host compiler's bounds analysis would flag the empty loop)
        for (int i = tid; i < BN * R; i += blockDim.x) {
            int c, q;
            if (!BWD) c = i / R1, q = i % R1;
            else q = i / BN, c = i % BN;
            float v = 0.0f;
            if (q < P.r && n0 + c < N) v = BWD ? P.v_mat[(long long)q * P.din + n0 + c] : P.v_mat[(long long)(n0 + c) * P.r + q];
            sV[c * RP + q] = MmaType<T>::bits(v);
        }
    }
    // The projection as the A operand of (in U) V: accumulator tiles 2k and 2k+1 are k-step k.
    u32 ua[RA / 16][4];
#pragma unroll
    for (int n = 0; n < R / 8; n++) {
        ua[n >> 1][(n & 1) * 2 + 0] = pack2<T>(uacc[n][0], uacc[n][1]);
        ua[n >> 1][(n & 1) * 2 + 1] = pack2<T>(uacc[n][2], uacc[n][3]);
    }
    __syncthreads();
    T* out = (T*)P.out;
#pragma unroll
    for (int n = 0; n < BN / 8; n++) {
        float l[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int ks = 0; ks < R / 16; ks++) {
            const u16* vp = &sV[(n * 8 + g) * RP + ks * 16 + 2 * t4];
            u32 b[2] = {*(const u32*)vp, *(const u32*)(vp + 8)};
            mma16816<T>(l, ua[ks], b);
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int m = e < 2 ? r0 : r1, c = n0 + n * 8 + 2 * t4 + (e & 1);
            if (m >= P.n || c >= N) continue;
            float y;
            if (!BWD) {
                y = acc[n][e] + (P.bias ? P.bias[c] : 0.0f) + P.scale * l[e];
            } else {
                const float keep = P.drop_p > 0.0f ? lora_keep(P, (long long)m * P.din + c) : 1.0f;
                y = acc[n][e] + P.scale * keep * l[e];
            }
            out[(long long)m * N + c] = from_f32<T>(y);
        }
    }
}

#define LORA_MMA_R(T, S, R)                                                                      \
    extern "C" __global__ void __launch_bounds__(128) lora_fwd_mma_##S##_r##R(LoraParams P) {    \
        lora_fused_mma<T, R, false>(P);                                                          \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) lora_bwd_mma_##S##_r##R(LoraParams P) {    \
        lora_fused_mma<T, R, true>(P);                                                           \
    }
LORA_MMA_R(bf16, bf16, 0)
LORA_MMA_R(bf16, bf16, 16)
LORA_MMA_R(bf16, bf16, 64)
LORA_MMA_R(f16, f16, 0)
LORA_MMA_R(f16, f16, 16)
LORA_MMA_R(f16, f16, 64)

// ---- launch: engine/cuda/kernels/lora.rs (grid (ceil(N / 64), ceil(n / 64)), 128 threads, as
// the scalar kernels) ------------------------------------------------------------------------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(lora_mma) {
#define REG_R(S, R)                         \
    SHIM_REGISTER(lora_fwd_mma_##S##_r##R); \
    SHIM_REGISTER(lora_bwd_mma_##S##_r##R);
    REG_R(bf16, 0) REG_R(bf16, 16) REG_R(bf16, 64) REG_R(f16, 0) REG_R(f16, 16) REG_R(f16, 64)
#undef REG_R
}
#endif
