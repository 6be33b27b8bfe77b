// attention_mma.cu: attention with prefix keys on the tensor cores (mma.sync m16n8k16, sm_80+),
// bf16/f16 inputs with f32 accumulation. Computes exactly what attention.cu's head comment
// says (same AttnParams, same visibility, dropout and lse), for D = 32, 64, 128: the forward,
// dQ and dK/dV (delta = rowsum(dO O) stays attention.cu's attn_bwd_delta: no product in it).
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

// ---- kernels: backward ------------------------------------------------------------------------
// As attention.cu's scalar backward (delta from attn_bwd_delta, same outputs and
// accumulation rules), on the tensor cores. Per block shapes by head dimension: BKEY keys per
// tile of the dQ kernel; the dK/dV kernel takes 64 / DSPLIT keys per block (16 per warp) and
// BQ queries per tile, and for D = 128 splits the output columns over two warps per key group
// (each recomputes the scores of its 16 keys and accumulates half of dK and dV), which keeps
// the accumulators at 2 x 32 registers.
template <int D> struct MmaBwdCfg;
template <> struct MmaBwdCfg<32> { static const int BKEY = 64, BQ = 64, DSPLIT = 1; };
template <> struct MmaBwdCfg<64> { static const int BKEY = 64, BQ = 64, DSPLIT = 1; };
template <> struct MmaBwdCfg<128> { static const int BKEY = 32, BQ = 32, DSPLIT = 2; };

// Rows 0 .. ROWS of a tile into sA[r][c] (row stride AP) and transposed into sT[c][r] (row
// stride TP); pair(r, c) gives elements c and c + 1 of row r (c even) as one 32-bit word.
template <int ROWS, int D, int AP, int TP, typename Pair>
__device__ __forceinline__ void load_tile_and_transpose(u16* sA, u16* sT, Pair pair) {
    for (int i = threadIdx.x; i < ROWS * (D / 2); i += blockDim.x) {
        const int r = i / (D / 2), c = 2 * (i % (D / 2));
        const u32 v = pair(r, c);
        *(u32*)&sA[r * AP + c] = v;
        sT[c * TP + r] = (u16)(v & 0xffffu);
        sT[(c + 1) * TP + r] = (u16)(v >> 16);
    }
}

// dQ for 64 queries of one (sequence, head), 16 per warp: per key tile, S = Q K^T and
// dP = dO V^T in registers, dS = P (keep dP - delta) scale rounded to T as the A operand of
// dQ += dS K (K transposed in shared memory: keys contiguous per d). dq OVERWRITTEN.
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_dq_mma(const AttnParams& P) {
    constexpr int BKEY = MmaBwdCfg<D>::BKEY, KP = D + 8, TP = BKEY + 8;
    __shared__ __align__(16) u16 sK[BKEY * KP];
    __shared__ __align__(16) u16 sV[BKEY * KP];
    __shared__ __align__(16) u16 sKt[D * TP];
    const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    if (tile * MMA_BQ >= nq) return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int gh = h / (P.heads / P.kv_heads), L = P.prefix + nk;
    const long long qs = (long long)P.heads * D, kvs = (long long)P.kv_heads * D;
    const int r0 = tile * MMA_BQ + warp * 16 + g, r1 = r0 + 8;
    // Q and dO fragments (A operands, k = d), the rows' lse and delta.
    u32 qa[D / 16][4], oa[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        const int c = ks * 16 + 2 * t4;
        const long long o0 = ((q0 + r0) * qs + h * D + c) >> 1, o1 = ((q0 + r1) * qs + h * D + c) >> 1;
        const u32* q = (const u32*)P.q;
        const u32* go = (const u32*)P.dout;
        qa[ks][0] = r0 < nq ? q[o0] : 0u;
        qa[ks][1] = r1 < nq ? q[o1] : 0u;
        qa[ks][2] = r0 < nq ? q[o0 + 4] : 0u;
        qa[ks][3] = r1 < nq ? q[o1 + 4] : 0u;
        oa[ks][0] = r0 < nq ? go[o0] : 0u;
        oa[ks][1] = r1 < nq ? go[o1] : 0u;
        oa[ks][2] = r0 < nq ? go[o0 + 4] : 0u;
        oa[ks][3] = r1 < nq ? go[o1 + 4] : 0u;
    }
    const float lse[2] = {r0 < nq ? P.lse[(long long)h * P.q_rows + q0 + r0] : -PA_INFINITY,
                          r1 < nq ? P.lse[(long long)h * P.q_rows + q0 + r1] : -PA_INFINITY};
    const float dl[2] = {r0 < nq ? P.delta[(long long)h * P.q_rows + q0 + r0] : 0.0f,
                         r1 < nq ? P.delta[(long long)h * P.q_rows + q0 + r1] : 0.0f};
    float dq[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

    for (int kt = 0; kt < L; kt += BKEY) {
        __syncthreads();  // the previous tile is consumed
        // K (and its transpose), V: prefix rows come from pk/pv, sequence rows from k/v.
        for (int i = tid; i < BKEY * (D / 2); i += blockDim.x) {
            const int r = i / (D / 2), c = 2 * (i % (D / 2)), j = kt + r;
            u32 kk = 0u, vv = 0u;
            if (j < P.prefix) {
                const long long off = (j * kvs + gh * D + c) >> 1;
                kk = ((const u32*)P.pk)[off];
                vv = ((const u32*)P.pv)[off];
            } else if (j < L) {
                const long long off = ((k0 + j - P.prefix) * kvs + gh * D + c) >> 1;
                kk = ((const u32*)P.k)[off];
                vv = ((const u32*)P.v)[off];
            }
            *(u32*)&sK[r * KP + c] = kk;
            *(u32*)&sV[r * KP + c] = vv;
            sKt[c * TP + r] = (u16)(kk & 0xffffu);
            sKt[(c + 1) * TP + r] = (u16)(kk >> 16);
        }
        __syncthreads();
        float s[BKEY / 8][4], dp[BKEY / 8][4];
#pragma unroll
        for (int n = 0; n < BKEY / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
                const u16* kr = &sK[(n * 8 + g) * KP + ks * 16 + 2 * t4];
                const u16* vr = &sV[(n * 8 + g) * KP + ks * 16 + 2 * t4];
                u32 bk[2] = {*(const u32*)kr, *(const u32*)(kr + 8)};
                u32 bv[2] = {*(const u32*)vr, *(const u32*)(vr + 8)};
                mma16816<T>(s[n], qa[ks], bk);
                mma16816<T>(dp[n], oa[ks], bv);
            }
        }
        // dS, rounded to T, as the A operand of dS K (S tiles 2k and 2k+1 are k-step k).
        u32 dsa[BKEY / 16][4];
#pragma unroll
        for (int n = 0; n < BKEY / 8; n++) {
            float ds[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int rr = e >> 1, row = rr ? r1 : r0, j = kt + n * 8 + 2 * t4 + (e & 1);
                ds[e] = 0.0f;
                if (lse[rr] != -PA_INFINITY && attn_sees(P, k0, nq, nk, L, row, j)) {
                    const float p = expf(s[n][e] * P.scale - lse[rr]);
                    ds[e] = p * (attn_keep(P, h, q0 + row, j) * dp[n][e] - dl[rr]) * P.scale;
                }
            }
            dsa[n >> 1][(n & 1) * 2 + 0] = pack2<T>(ds[0], ds[1]);
            dsa[n >> 1][(n & 1) * 2 + 1] = pack2<T>(ds[2], ds[3]);
        }
#pragma unroll
        for (int ks = 0; ks < BKEY / 16; ks++) {
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const u16* kr = &sKt[(n * 8 + g) * TP + ks * 16 + 2 * t4];
                u32 bb[2] = {*(const u32*)kr, *(const u32*)(kr + 8)};
                mma16816<T>(dq[n], dsa[ks], bb);
            }
        }
    }
    if (!P.dq) return;
    u32* out = (u32*)P.dq;
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
        const int c = n * 8 + 2 * t4;
        if (r0 < nq) out[((q0 + r0) * qs + h * D + c) >> 1] = pack2<T>(dq[n][0], dq[n][1]);
        if (r1 < nq) out[((q0 + r1) * qs + h * D + c) >> 1] = pack2<T>(dq[n][2], dq[n][3]);
    }
}

// dK and dV for the 16 keys of each warp (rows of [prefix ; sequence b], kv head g), summed
// over the query heads of the group and the sequence's queries: per query tile, S^T = K Q^T
// and dP^T = V dO^T in registers (K, V fragments loaded once), then P^T keep and dS^T, rounded
// to T, as the A operands of dV += (P^T keep) dO and dK += dS^T Q (Q and dO transposed in
// shared memory: queries contiguous per d). With DSPLIT = 2 a warp accumulates only its half
// of the D columns. dk, dv OVERWRITTEN; prefix rows to part_k/part_v or atomics (as the
// scalar kernel).
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_dkdv_mma(const AttnParams& P) {
    constexpr int BQ = MmaBwdCfg<D>::BQ, DS = MmaBwdCfg<D>::DSPLIT, KEYS = 64 / DS, DW = D / DS;
    constexpr int QP = D + 8, TP = BQ + 8;
    __shared__ __align__(16) u16 sQ[BQ * QP];
    __shared__ __align__(16) u16 sdO[BQ * QP];
    __shared__ __align__(16) u16 sQt[D * TP];
    __shared__ __align__(16) u16 sdOt[D * TP];
    __shared__ float sL[BQ];
    __shared__ float sDl[BQ];
    const int b = blockIdx.z, gh = blockIdx.y, tile = blockIdx.x;
    const int q0 = P.q_off[b], nq = P.q_off[b + 1] - q0;
    const int k0 = P.k_off[b], nk = P.k_off[b + 1] - k0;
    const int L = P.prefix + nk;
    if (tile * KEYS >= L) return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int kg = warp % (4 / DS), c0 = (warp / (4 / DS)) * DW;  // key group, first column
    const long long qs = (long long)P.heads * D, kvs = (long long)P.kv_heads * D;
    const int j0 = tile * KEYS + kg * 16 + g, j1 = j0 + 8;  // this lane's two keys
    // K and V fragments (A operands: rows = keys, k = d).
    u32 ka[D / 16][4], va[D / 16][4];
    {
        auto pair = [&](const void* pre, const void* seq, int j, int c) -> u32 {
            if (j < P.prefix) return ((const u32*)pre)[(j * kvs + gh * D + c) >> 1];
            if (j < L) return ((const u32*)seq)[((k0 + j - P.prefix) * kvs + gh * D + c) >> 1];
            return 0u;
        };
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const int c = ks * 16 + 2 * t4;
            ka[ks][0] = pair(P.pk, P.k, j0, c);
            ka[ks][1] = pair(P.pk, P.k, j1, c);
            ka[ks][2] = pair(P.pk, P.k, j0, c + 8);
            ka[ks][3] = pair(P.pk, P.k, j1, c + 8);
            va[ks][0] = pair(P.pv, P.v, j0, c);
            va[ks][1] = pair(P.pv, P.v, j1, c);
            va[ks][2] = pair(P.pv, P.v, j0, c + 8);
            va[ks][3] = pair(P.pv, P.v, j1, c + 8);
        }
    }
    float dk[DW / 8][4], dv[DW / 8][4];
#pragma unroll
    for (int n = 0; n < DW / 8; n++) {
        dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.0f;
        dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
    }
    const int rep = P.heads / P.kv_heads;
    for (int r = 0; r < rep; r++) {
        const int h = gh * rep + r;
        for (int qt = 0; qt < nq; qt += BQ) {
            __syncthreads();  // the previous tile is consumed
            auto qpair = [&](const void* src) {
                return [&, src](int rr, int c) -> u32 {
                    const int t = qt + rr;
                    return t < nq ? ((const u32*)src)[((q0 + t) * qs + h * D + c) >> 1] : 0u;
                };
            };
            load_tile_and_transpose<BQ, D, QP, TP>(sQ, sQt, qpair(P.q));
            load_tile_and_transpose<BQ, D, QP, TP>(sdO, sdOt, qpair(P.dout));
            for (int i = tid; i < BQ; i += blockDim.x) {
                const int t = qt + i;
                sL[i] = t < nq ? P.lse[(long long)h * P.q_rows + q0 + t] : -PA_INFINITY;
                sDl[i] = t < nq ? P.delta[(long long)h * P.q_rows + q0 + t] : 0.0f;
            }
            __syncthreads();
            // S^T and dP^T for the warp's 16 keys and the BQ queries.
            float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
            for (int n = 0; n < BQ / 8; n++) {
                s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
                dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
#pragma unroll
                for (int ks = 0; ks < D / 16; ks++) {
                    const u16* qr = &sQ[(n * 8 + g) * QP + ks * 16 + 2 * t4];
                    const u16* orow = &sdO[(n * 8 + g) * QP + ks * 16 + 2 * t4];
                    u32 bq[2] = {*(const u32*)qr, *(const u32*)(qr + 8)};
                    u32 bo[2] = {*(const u32*)orow, *(const u32*)(orow + 8)};
                    mma16816<T>(s[n], ka[ks], bq);
                    mma16816<T>(dp[n], va[ks], bo);
                }
            }
            // P^T keep and dS^T as A operands (accumulator tiles 2k, 2k+1: queries of k-step k).
            u32 pa[BQ / 16][4], dsa[BQ / 16][4];
#pragma unroll
            for (int n = 0; n < BQ / 8; n++) {
                float pk[4], ds[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = e < 2 ? j0 : j1, i = n * 8 + 2 * t4 + (e & 1), t = qt + i;
                    pk[e] = ds[e] = 0.0f;
                    if (sL[i] != -PA_INFINITY && attn_sees(P, k0, nq, nk, L, t, j)) {
                        const float p = expf(s[n][e] * P.scale - sL[i]), keep = attn_keep(P, h, q0 + t, j);
                        pk[e] = p * keep;
                        ds[e] = p * (keep * dp[n][e] - sDl[i]) * P.scale;
                    }
                }
                pa[n >> 1][(n & 1) * 2 + 0] = pack2<T>(pk[0], pk[1]);
                pa[n >> 1][(n & 1) * 2 + 1] = pack2<T>(pk[2], pk[3]);
                dsa[n >> 1][(n & 1) * 2 + 0] = pack2<T>(ds[0], ds[1]);
                dsa[n >> 1][(n & 1) * 2 + 1] = pack2<T>(ds[2], ds[3]);
            }
#pragma unroll
            for (int ks = 0; ks < BQ / 16; ks++) {
#pragma unroll
                for (int n = 0; n < DW / 8; n++) {
                    const int col = c0 + n * 8 + g;
                    const u16* orow = &sdOt[col * TP + ks * 16 + 2 * t4];
                    const u16* qr = &sQt[col * TP + ks * 16 + 2 * t4];
                    u32 bo[2] = {*(const u32*)orow, *(const u32*)(orow + 8)};
                    u32 bq[2] = {*(const u32*)qr, *(const u32*)(qr + 8)};
                    mma16816<T>(dv[n], pa[ks], bo);
                    mma16816<T>(dk[n], dsa[ks], bq);
                }
            }
        }
    }
#pragma unroll
    for (int n = 0; n < DW / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int j = e < 2 ? j0 : j1, c = c0 + n * 8 + 2 * t4 + (e & 1);
            if (j >= L) continue;
            if (j < P.prefix) {
                // A prefix row: this sequence's share of the batch sum.
                const long long off = (long long)j * kvs + gh * D + c, part = (long long)b * P.prefix * kvs + off;
                if (P.dpk) {
                    if (P.part_k) P.part_k[part] = dk[n][e];
                    else atomicAdd(P.dpk + off, dk[n][e]);
                }
                if (P.dpv) {
                    if (P.part_v) P.part_v[part] = dv[n][e];
                    else atomicAdd(P.dpv + off, dv[n][e]);
                }
            } else {
                const long long off = (long long)(k0 + j - P.prefix) * kvs + gh * D + c;
                if (P.dk) ((T*)P.dk)[off] = from_f32<T>(dk[n][e]);
                if (P.dv) ((T*)P.dv)[off] = from_f32<T>(dv[n][e]);
            }
        }
    }
}

#define MMA_D(T, S, D)                                                                           \
    extern "C" __global__ void __launch_bounds__(128) attn_fwd_mma_##S##_d##D(AttnParams P) {    \
        attn_fwd_mma<T, D>(P);                                                                   \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) attn_bwd_dq_mma_##S##_d##D(AttnParams P) { \
        attn_bwd_dq_mma<T, D>(P);                                                                \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) attn_bwd_dkdv_mma_##S##_d##D(AttnParams P) { \
        attn_bwd_dkdv_mma<T, D>(P);                                                              \
    }
#define MMA_T(T, S) MMA_D(T, S, 32) MMA_D(T, S, 64) MMA_D(T, S, 128)
MMA_T(bf16, bf16)
MMA_T(f16, f16)

// ---- launch: engine/cuda/kernels/attention.rs, 128 threads: fwd and dq grid (ceil(max
// queries / 64), heads, batch); dkdv grid (ceil(max(P + keys) / (64 / DSPLIT)), kv_heads,
// batch), then colsum_accumulate of part_k, part_v when deterministic ------------------------------
#ifdef POLYADAPT_SHIM
SHIM_MODULE(attention_mma) {
#define REG_D(S, D)                            \
    SHIM_REGISTER(attn_fwd_mma_##S##_d##D);     \
    SHIM_REGISTER(attn_bwd_dq_mma_##S##_d##D);  \
    SHIM_REGISTER(attn_bwd_dkdv_mma_##S##_d##D);
    REG_D(bf16, 32) REG_D(bf16, 64) REG_D(bf16, 128) REG_D(f16, 32) REG_D(f16, 64) REG_D(f16, 128)
#undef REG_D
}
#endif
