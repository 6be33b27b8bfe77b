// Host shim runtime: runs a kernel's grid on the CPU (see cuda_shim.h for the model).
//
// A launch starts a few worker threads; each takes blocks from a shared counter and runs one
// block at a time as `blockDim` fibers on its own thread. A fiber switch is a few instructions
// (x86-64 assembly below; ucontext elsewhere). Called from Rust through polyadapt_shim_launch.
#include "cuda_shim.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SHIM_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define SHIM_TSAN 1
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace shim {

// ---- context switch ----------------------------------------------------------------------------
#if defined(__x86_64__)
// Saves the callee-saved registers and the SSE/x87 control words on the current stack, stores
// the stack pointer in *from, loads `to` and restores the same from there.
extern "C" void polyadapt_shim_switch(void** from, void* to);
asm(R"(
.text
.globl polyadapt_shim_switch
.type polyadapt_shim_switch,@function
polyadapt_shim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size polyadapt_shim_switch,.-polyadapt_shim_switch
.section .note.GNU-stack,"",@progbits
.text
)");
struct Context {
    void* sp = nullptr;
};
// What a switch reads of the target, read before the TSan fiber switch so that the read is the
// switching fiber's (which wrote it, or acquired it), not the target's.
using Target = void*;
static Target target_of(Context& c) { return c.sp; }
static void context_switch(Context& from, Target to) { polyadapt_shim_switch(&from.sp, to); }
#else
struct Context {
    ucontext_t uc;
};
using Target = ucontext_t*;
static Target target_of(Context& c) { return &c.uc; }
static void context_switch(Context& from, Target to) { swapcontext(&from.uc, to); }
#endif

thread_local dim3 tls_block_idx;
thread_local dim3 tls_block_dim;
thread_local dim3 tls_grid_dim;

// Block bookkeeping is touched by every fiber of the block. Under TSan fibers are threads that
// do not synchronise when they switch, so it is kept in relaxed atomics: no race reports on the
// bookkeeping, and no happens-before from it either (the barriers provide that explicitly).
template <typename T>
static T ld(const T& x) {
    return __atomic_load_n(&x, __ATOMIC_RELAXED);
}
template <typename T>
struct Same {
    using type = T;
};
template <typename T>
static void st(T& x, typename Same<T>::type v) {
    __atomic_store_n(&x, v, __ATOMIC_RELAXED);
}
template <typename T>
static T inc(T& x) {
    return __atomic_add_fetch(&x, 1, __ATOMIC_RELAXED);
}
template <typename T>
static T dec(T& x) {
    return __atomic_sub_fetch(&x, 1, __ATOMIC_RELAXED);
}

static inline void hb_release(void* addr) {
#ifdef SHIM_TSAN
    __tsan_release(addr);
#else
    (void)addr;
#endif
}
static inline void hb_acquire(void* addr) {
#ifdef SHIM_TSAN
    __tsan_acquire(addr);
#else
    (void)addr;
#endif
}

constexpr size_t kExchangeBytes = 64;

struct Fiber {
    ThreadCoords coords{};
    int tid = 0;
    bool done = false;
    Context ctx;
    char* stack = nullptr;  // usable region [stack, stack + stack_size)
    size_t stack_size = 0;
    void* fake_stack = nullptr;  // ASan's
    void* tsan_fiber = nullptr;
};

struct Warp {
    unsigned lanes = 0;    // lanes that exist (a partial last warp has fewer than 32)
    unsigned arrived = 0;  // lanes waiting at the current warp barrier
    unsigned exited = 0;   // lanes that returned
    unsigned gen = 0;      // completed warp barriers
    // Double-buffered by barrier parity: a fast lane writing the next exchange never overwrites
    // what a slow lane is still reading from the current one.
    unsigned char buf[2][32][kExchangeBytes];
    // TSan: lanes release into hb[gen % 2] on arriving at a warp barrier and acquire it on
    // leaving (see Worker::hb_bar).
    char hb[2] = {0, 0};
};

struct Worker {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Context sched;
    const void* sched_stack_bottom = nullptr;  // ASan: the scheduler's own stack
    size_t sched_stack_size = 0;
    void* sched_tsan = nullptr;
    Thunk thunk = nullptr;
    void** args = nullptr;
    int live = 0;          // fibers not yet returned
    int bar_arrived = 0;   // fibers waiting at __syncthreads
    unsigned bar_gen = 0;  // completed block barriers
    // TSan: a fiber releases into hb_bar[gen % 2] on arriving at block barrier `gen` and
    // acquires it on leaving. One sync object per parity, not one for all barriers: a fast
    // fiber arriving at the next barrier must not publish its accesses to the slow fibers
    // still leaving this one, or a missing barrier between them would go unreported.
    char hb_bar[2] = {0, 0};
    unsigned long progress = 0;
    const char* error = nullptr;
    // TSan: block k's fibers acquire hb_block[k % 2] when they start and release into
    // hb_block[(k + 1) % 2] when they end, so that one block's fibers are ordered before the
    // next block's without ordering a block's fibers among themselves.
    char hb_block[2] = {0, 0};
    unsigned long blocks_run = 0;
};

static thread_local Worker* tls_worker = nullptr;
static thread_local Fiber* tls_fiber = nullptr;

static Fiber* fiber_now() { return ld(tls_fiber); }
const ThreadCoords& current() { return fiber_now()->coords; }
int lane_id() { return fiber_now()->tid & 31; }

static size_t fiber_stack_size() {
#if defined(SHIM_ASAN) || defined(SHIM_TSAN)
    return 1 << 20;  // instrumented frames are several times larger
#else
    return 256 << 10;
#endif
}

// Fiber -> scheduler.
static void yield_to_scheduler(bool dying) {
    Worker& w = *ld(tls_worker);
    Fiber& f = *fiber_now();
    Target to = target_of(w.sched);
#ifdef SHIM_ASAN
    __sanitizer_start_switch_fiber(dying ? nullptr : &f.fake_stack, w.sched_stack_bottom, w.sched_stack_size);
#endif
#ifdef SHIM_TSAN
    // A dying fiber's last accesses (this function's own reads of the worker) are ordered
    // before whatever the worker does next, e.g. reuse its stack for the next launch's Worker.
    __tsan_switch_to_fiber(w.sched_tsan, dying ? 0 : __tsan_switch_to_fiber_no_sync);
#endif
    context_switch(f.ctx, to);
#ifdef SHIM_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

// Scheduler -> fiber.
static void resume(Worker& w, Fiber& f) {
    st(tls_fiber, &f);
    Target to = target_of(f.ctx);
#ifdef SHIM_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, f.stack_size);
#endif
#ifdef SHIM_TSAN
    __tsan_switch_to_fiber(f.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
    context_switch(w.sched, to);
#ifdef SHIM_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    st(tls_fiber, (Fiber*)nullptr);
}

// A fiber whose launch has failed (deadlock, misuse) parks here for good: the scheduler
// abandons it and reinitialises its context for the next launch.
static char* hb_block_end(Worker& w) { return &w.hb_block[(ld(w.blocks_run) + 1) & 1]; }
static char* hb_block_start(Worker& w) { return &w.hb_block[ld(w.blocks_run) & 1]; }

[[noreturn]] static void park() {
    hb_release(hb_block_end(*ld(tls_worker)));
    for (;;) yield_to_scheduler(false);
}

static void fail(const char* msg) {
    Worker& w = *ld(tls_worker);
    if (!ld(w.error)) st(w.error, msg);
    park();
}

static void release_block_barrier_if_complete(Worker& w) {
    if (ld(w.bar_arrived) > 0 && ld(w.bar_arrived) == ld(w.live)) {
        st(w.bar_arrived, 0);
        inc(w.bar_gen);
        inc(w.progress);
    }
}

void syncthreads() {
    Worker& w = *ld(tls_worker);
    unsigned g = ld(w.bar_gen);
    hb_release(&w.hb_bar[g & 1]);
    inc(w.bar_arrived);
    release_block_barrier_if_complete(w);
    while (ld(w.bar_gen) == g) {
        yield_to_scheduler(false);
        if (ld(w.error)) park();
    }
    hb_acquire(&w.hb_bar[g & 1]);
}

static void warp_barrier(Warp& wp) {
    Worker& w = *ld(tls_worker);
    if (ld(wp.exited) > 0) fail("a warp collective (shuffle, ballot, __syncwarp) ran after a lane of its warp returned");
    unsigned g = ld(wp.gen);
    hb_release(&wp.hb[g & 1]);
    if (inc(wp.arrived) == wp.lanes) {
        st(wp.arrived, 0u);
        inc(wp.gen);
        inc(w.progress);
    } else {
        while (ld(wp.gen) == g) {
            yield_to_scheduler(false);
            if (ld(w.error)) park();
        }
    }
    hb_acquire(&wp.hb[g & 1]);
}

void syncwarp() {
    Worker& w = *ld(tls_worker);
    warp_barrier(w.warps[fiber_now()->tid >> 5]);
}

void warp_exchange(const void* mine, size_t bytes, int src_lane, void* out, void* all) {
    Worker& w = *ld(tls_worker);
    Warp& wp = w.warps[fiber_now()->tid >> 5];
    int lane = fiber_now()->tid & 31;
    unsigned parity = ld(wp.gen) & 1;
    std::memcpy(wp.buf[parity][lane], mine, bytes);
    warp_barrier(wp);
    if (all) {
        for (unsigned l = 0; l < 32; l++) {
            if (l < wp.lanes)
                std::memcpy(static_cast<char*>(all) + l * bytes, wp.buf[parity][l], bytes);
            else
                std::memset(static_cast<char*>(all) + l * bytes, 0, bytes);
        }
    } else {
        if (src_lane < 0 || src_lane >= (int)wp.lanes) src_lane = lane;  // as the GPU: own value
        std::memcpy(out, wp.buf[parity][src_lane], bytes);
    }
}

[[noreturn]] static void fiber_main() {
    Worker& w = *ld(tls_worker);
    Fiber& f = *fiber_now();
#ifdef SHIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w.sched_stack_bottom, &w.sched_stack_size);
#endif
    hb_acquire(hb_block_start(w));
    w.thunk(w.args);
    st(f.done, true);
    Warp& wp = w.warps[f.tid >> 5];
    if (ld(wp.arrived) > 0 && !ld(w.error)) {
        // Its warp mates wait at a collective this lane will never reach.
        st(w.error, "a lane returned while its warp waited at a collective");
    }
    inc(wp.exited);
    dec(w.live);
    inc(w.progress);
    release_block_barrier_if_complete(w);
    hb_release(hb_block_end(w));
    yield_to_scheduler(true);
    __builtin_unreachable();
}

#if defined(__x86_64__)
static void init_context(Fiber& f) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;                                           // fiber_main's (never used) return address
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);     // where the switch's `ret` goes
    for (int i = 0; i < 6; i++) *--sp = 0;               // rbp rbx r12 r13 r14 r15
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    *--sp = uint64_t(mxcsr) | (uint64_t(fpucw) << 32);
    f.ctx.sp = sp;
}
#else
static void init_context(Fiber& f) {
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack;
    f.ctx.uc.uc_stack.ss_size = f.stack_size;
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, reinterpret_cast<void (*)()>(&fiber_main), 0);
}
#endif

// Fiber stacks with a guard page below each, so an overflow faults instead of corrupting.
static char* map_stack(size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void* p = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    mprotect(p, page, PROT_NONE);
    return static_cast<char*>(p) + page;
}
static void unmap_stack(char* s, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap(s - page, size + page);
}

struct Launch {
    dim3 grid, block;
    Thunk thunk;
    void** args;
    std::atomic<unsigned long> next{0};
    std::mutex err_mu;
    std::string error;
};

static void run_worker(Launch& L) {
    Worker w;
    st(tls_worker, &w);
    unsigned n = L.block.x * L.block.y * L.block.z;
    w.fibers.resize(n);
    w.warps.resize((n + 31) / 32);
    size_t ss = fiber_stack_size();
#ifdef SHIM_TSAN
    w.sched_tsan = __tsan_get_current_fiber();
#endif
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = w.fibers[t];
        f.tid = (int)t;
        f.coords.thread_idx = {t % L.block.x, (t / L.block.x) % L.block.y, t / (L.block.x * L.block.y)};
        f.stack = map_stack(ss);
        f.stack_size = ss;
        if (!f.stack) {
            std::lock_guard<std::mutex> g(L.err_mu);
            L.error = "could not map fiber stacks";
            L.next.store(~0ul / 2);
            break;
        }
#ifdef SHIM_TSAN
        f.tsan_fiber = __tsan_create_fiber(0);
#endif
    }
    for (unsigned i = 0; i < w.warps.size(); i++) w.warps[i].lanes = std::min(32u, n - 32 * i);
    w.thunk = L.thunk;
    w.args = L.args;
    unsigned long blocks = (unsigned long)L.grid.x * L.grid.y * L.grid.z;
    tls_block_dim = L.block;
    tls_grid_dim = L.grid;
    for (;;) {
        unsigned long b = L.next.fetch_add(1);
        if (b >= blocks) break;
        tls_block_idx = {unsigned(b % L.grid.x), unsigned((b / L.grid.x) % L.grid.y), unsigned(b / ((unsigned long)L.grid.x * L.grid.y))};
        st(w.live, (int)n);
        st(w.bar_arrived, 0);
        for (auto& wp : w.warps) {
            st(wp.arrived, 0u);
            st(wp.exited, 0u);
        }
        for (auto& f : w.fibers) {
            st(f.done, false);
            init_context(f);
        }
        hb_release(hb_block_start(w));
        while (ld(w.live) > 0 && !ld(w.error)) {
            unsigned long before = ld(w.progress);
            for (auto& f : w.fibers) {
                if (!ld(f.done)) resume(w, f);
                if (ld(w.error)) break;
            }
            if (!ld(w.error) && ld(w.live) > 0 && ld(w.progress) == before)
                st(w.error, "deadlock: threads wait at a barrier (__syncthreads or a warp collective) that others never reach");
        }
        if (ld(w.error)) {
            // Let every fiber still inside the kernel see the error and park (which orders its
            // last accesses before the teardown, for TSan).
            for (auto& f : w.fibers)
                if (!ld(f.done)) resume(w, f);
        }
        hb_acquire(hb_block_end(w));
        inc(w.blocks_run);
        if (ld(w.error)) {
            std::lock_guard<std::mutex> g(L.err_mu);
            if (L.error.empty()) {
                char buf[512];
                snprintf(buf, sizeof buf, "%s (block %u,%u,%u)", w.error, tls_block_idx.x, tls_block_idx.y, tls_block_idx.z);
                L.error = buf;
            }
            L.next.store(~0ul / 2);
            break;
        }
    }
    for (auto& f : w.fibers) {
        if (f.stack) unmap_stack(f.stack, f.stack_size);
#ifdef SHIM_TSAN
        if (f.tsan_fiber) __tsan_destroy_fiber(f.tsan_fiber);
#endif
    }
    st(tls_worker, (Worker*)nullptr);
}

struct Entry {
    size_t nargs;
    Thunk thunk;
};
static std::unordered_map<std::string, Entry>& registry() {
    static std::unordered_map<std::string, Entry> r;
    return r;
}
void register_kernel(const char* name, size_t nargs, Thunk thunk) { registry()[name] = Entry{nargs, thunk}; }

}  // namespace shim

// Generated by build.rs: calls every kernel file's SHIM_MODULE function.
extern "C" void polyadapt_shim_register_all();

static void set_err(char* err, size_t len, const std::string& msg) {
    if (err && len) {
        size_t n = std::min(len - 1, msg.size());
        std::memcpy(err, msg.data(), n);
        err[n] = 0;
    }
}

// Runs kernel `name` over `grid` x `block` with cuLaunchKernel-style arguments (an array of
// pointers to each argument's value). Returns 0, or 1 with a message in `err`.
extern "C" int polyadapt_shim_launch(const char* name, const unsigned* grid, const unsigned* block, void** args,
                                     size_t nargs, unsigned workers, char* err, size_t err_len) {
    static std::once_flag once;
    std::call_once(once, [] { polyadapt_shim_register_all(); });
    auto it = shim::registry().find(name);
    if (it == shim::registry().end()) {
        set_err(err, err_len, std::string("no kernel named ") + name + " in the host shim");
        return 1;
    }
    if (it->second.nargs != nargs) {
        set_err(err, err_len, std::string("kernel ") + name + " takes " + std::to_string(it->second.nargs) +
                                  " arguments, the launch passed " + std::to_string(nargs));
        return 1;
    }
    unsigned threads = block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024) {
        set_err(err, err_len, std::string("kernel ") + name + ": a block has 1 to 1024 threads, asked for " + std::to_string(threads));
        return 1;
    }
    unsigned long blocks = (unsigned long)grid[0] * grid[1] * grid[2];
    if (blocks == 0) return 0;
    shim::Launch L;
    L.grid = {grid[0], grid[1], grid[2]};
    L.block = {block[0], block[1], block[2]};
    L.thunk = it->second.thunk;
    L.args = args;
    unsigned nw = workers ? workers : std::max(1u, std::thread::hardware_concurrency());
    nw = (unsigned)std::min<unsigned long>(nw, blocks);
#ifdef SHIM_TSAN
    // Workers are always threads of their own under TSan: the calling thread comes from
    // uninstrumented Rust code (the test harness), whose reports scripts/cuda/tsan.supp
    // suppresses, and the blocks must not run on it.
    const bool inline_worker = false;
#else
    const bool inline_worker = nw == 1;
#endif
    if (inline_worker) {
        shim::run_worker(L);
    } else {
        std::vector<std::thread> pool;
        for (unsigned i = 0; i < nw; i++) pool.emplace_back([&L] { shim::run_worker(L); });
        for (auto& t : pool) t.join();
    }
    if (!L.error.empty()) {
        set_err(err, err_len, std::string("kernel ") + name + ": " + L.error);
        return 1;
    }
    return 0;
}
