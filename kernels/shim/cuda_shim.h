// Host shim: just enough of CUDA C++ to compile the scalar path of a kernels/*.cu file with the
// host C++ compiler and run it on the CPU, from the same source.
//
// Execution model. A launch runs its blocks on a few OS worker threads (blocks are
// independent, as on the GPU). Inside a block, each CUDA thread is a host *fiber* (a user-level
// thread with its own stack) and the fibers of a block take turns on their worker: a fiber runs
// until it reaches a barrier (`__syncthreads`, a warp collective) or returns, then the next one
// runs. Fibers instead of one OS thread per CUDA thread because a barrier over 128 OS threads
// costs about 1.5 ms on a loaded 2-core machine (measured), and a flash-attention tile needs
// several: the tests would crawl. Switching fibers costs nanoseconds.
//
// - threadIdx / blockIdx / blockDim / gridDim: the current fiber's and worker's indices.
// - __shared__: a `static thread_local` variable, i.e. one copy per worker thread, shared by the
//   fibers of the block that worker runs (one block at a time): the GPU's semantics.
// - __syncthreads: a barrier over the block's fibers; threads that returned count as arrived
//   (as on sm_70+).
// - warp collectives (__shfl_*_sync, __ballot_sync, __any_sync, __all_sync, __syncwarp): the 32
//   lanes of a warp exchange values through a per-warp buffer behind a warp barrier. A collective
//   that a lane of the warp has left (returned) is a bug: the shim aborts the launch and says so.
// - atomics: real atomic read-modify-writes, since blocks run concurrently on workers.
// - intrinsics (__expf, rsqrtf, __fdividef, ...): their libm counterparts (more precise than the
//   GPU's approximations, which is what the tests compare against anyway).
//
// Deadlock (some fibers wait at a barrier others never reach) ends the launch with an error.
// The tensor-core path (mma.sync) is behind PA_TENSOR_CORES (common.cuh), which only a device
// compile for sm_80+ defines; here it stays undefined.
//
// With -fsanitize=thread the fibers are TSan fibers that do not synchronise on a switch: only
// the barriers do (release on arrival, acquire on leaving), so a missing __syncthreads between a
// shared-memory write and another thread's read is reported as a race. With -fsanitize=address
// every switch is announced to ASan so that it follows the fiber stacks.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define POLYADAPT_SHIM 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static const
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint3 {
    unsigned x, y, z;
};

namespace shim {

// The state of the block the calling worker thread runs, and of the current fiber.
struct ThreadCoords {
    uint3 thread_idx;
};
extern thread_local dim3 tls_block_idx;
extern thread_local dim3 tls_block_dim;
extern thread_local dim3 tls_grid_dim;
const ThreadCoords& current();

void syncthreads();
void syncwarp();
// Writes `bytes` (<= 64) of this lane's value into the warp's exchange buffer, waits for the
// whole warp, and copies lane `src_lane`'s bytes to `out`. With `all` != nullptr copies every
// lane's bytes there (32 x bytes) instead.
void warp_exchange(const void* mine, size_t bytes, int src_lane, void* out, void* all);
int lane_id();

}  // namespace shim

#define threadIdx (shim::current().thread_idx)
#define blockIdx (shim::tls_block_idx)
#define blockDim (shim::tls_block_dim)
#define gridDim (shim::tls_grid_dim)
#define warpSize 32

inline void __syncthreads() { shim::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { shim::syncwarp(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- warp shuffles -------------------------------------------------------------------------
template <typename T>
inline T shim_shfl_from(T v, int src) {
    static_assert(sizeof(T) <= 64, "warp exchange carries up to 64 bytes");
    T out;
    shim::warp_exchange(&v, sizeof(T), src, &out, nullptr);
    return out;
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
    int lane = shim::lane_id();
    return shim_shfl_from(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
    int lane = shim::lane_id();
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return shim_shfl_from(v, src);
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = shim::lane_id();
    int src = lane + (int)delta;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return shim_shfl_from(v, src);
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = shim::lane_id();
    int src = lane - (int)delta;
    if (src < (lane & ~(width - 1))) src = lane;
    return shim_shfl_from(v, src);
}
inline unsigned __ballot_sync(unsigned, int pred) {
    int all[32];
    int mine = pred != 0;
    shim::warp_exchange(&mine, sizeof(int), 0, nullptr, all);
    unsigned m = 0;
    for (int i = 0; i < 32; i++) m |= (unsigned)(all[i] != 0) << i;
    return m;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    // Lanes past the end of a partial last warp report 0 in the buffer: count live lanes only.
    return __ballot_sync(mask, !pred) == 0;
}

// ---- atomics (blocks run concurrently on several workers) ----------------------------------
inline float atomicAdd(float* p, float v) {
    uint32_t old = __atomic_load_n(reinterpret_cast<uint32_t*>(p), __ATOMIC_RELAXED);
    for (;;) {
        float f;
        std::memcpy(&f, &old, 4);
        float n = f + v;
        uint32_t nb;
        std::memcpy(&nb, &n, 4);
        if (__atomic_compare_exchange_n(reinterpret_cast<uint32_t*>(p), &old, nb, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return f;
    }
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// ---- math intrinsics -------------------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline int __float_as_int(float f) { return (int)__float_as_uint(f); }
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
template <typename T>
inline T __ldg(const T* p) { return *p; }

// ---- registering kernels with the launcher ---------------------------------------------------
namespace shim {

using Thunk = void (*)(void** args);
void register_kernel(const char* name, size_t nargs, Thunk thunk);

template <typename... A, size_t... I>
inline void invoke_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <typename... A>
inline void invoke(void (*f)(A...), void** args) {
    invoke_with(f, args, std::index_sequence_for<A...>{});
}
template <typename... A>
constexpr size_t arity(void (*)(A...)) {
    return sizeof...(A);
}

}  // namespace shim

// At the end of a kernel file: SHIM_MODULE(file stem) { SHIM_REGISTER(kernel); ... }
// build.rs calls every file's module function once before the first launch. The arguments
// arrive as cuLaunchKernel's do: an array of pointers to each argument's value.
#define SHIM_MODULE(stem) extern "C" void polyadapt_shim_module_##stem()
#define SHIM_REGISTER(k) shim::register_kernel(#k, shim::arity(&k), [](void** a) { shim::invoke(&k, a); })
