//! The blocked driver (BLIS style): cache blocking, packing, and the split among threads.
//!
//! Loops, outermost first, for `C[m x n] (+)= alpha * A[m x k] * B[k x n]`:
//! 1. `n` in blocks of `NCO` columns: bounds the B buffer (buffers are reused per thread, so
//!    large products do not page-fault fresh memory each call);
//! 2. `k` in blocks of `KC`: pack the B block (`KC x NCO`, NR-column panels) once, or take it
//!    from a prepacked B (`packed.rs`);
//! 3. `m` in blocks of `MCO` rows: pack the A block (`MCO x KC`, MR-row panels, shared by all
//!    threads, L3-resident);
//! 4. tasks over a grid of (row chunk, column chunk) of the block, column chunks at most `NC`
//!    wide so a chunk's B panels (`KC x NC`) stay in a core's L2 while its A panels stream;
//! 5. in a task: for each A panel (kept in L1), for each B panel: the micro-kernel on one tile.
//!
//! The first `k` block writes C (`alpha * AB`, or adds it to C when accumulating), later blocks
//! add to it. Every element of C therefore sees the same sequence of operations, KC block by
//! KC block and k in order inside the kernel, whatever the number of threads, whether the
//! product runs in parallel and whether B was prepacked: results are bit-identical across
//! thread counts. Tasks write disjoint tiles of C; rayon balances them (there are several per
//! thread).

use rayon::prelude::*;

use super::pack::{Operand, PanelSpec};
use super::{MatMut, MatRef};

/// The part of C one kernel call writes: `rows x cols` at `ptr`, rows `ldc` apart, set to
/// `alpha * AB`, plus the old value when `beta_one`.
#[derive(Clone, Copy)]
pub(crate) struct CTile {
    pub ptr: *mut f32,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta_one: bool,
}

/// A micro-kernel with its packed element type, tile shape and cache blocking.
pub(crate) trait MicroKernel: Sync {
    /// Which path this is (a prepacked B records it, so it is only used with the same kernel).
    const PATH: super::KernelPath;
    /// The element of a packed panel (f32, or u16 bf16 bits in k pairs).
    type Packed: bytemuck::Pod + Send + Sync;
    const MR: usize;
    const NR: usize;
    /// The largest depth of a k block (`k` is split into blocks of equal, even depth).
    const KC: usize;
    /// Widest column chunk of one task: `KC x NC` of B fits in half of L2.
    const NC: usize;
    /// Rows and columns packed at a time (buffer bounds; blocks are evened out, so up to a
    /// panel more).
    const MCO: usize;
    const NCO: usize;

    fn panel_len(dc: usize, width: usize) -> usize;
    /// Packs the `p.lanes.div_ceil(p.width)` panels of `p` one after the other into `dst`.
    fn pack(&self, op: &Operand<'_>, p: PanelSpec, dst: &mut [Self::Packed]);

    /// One tile: `C = alpha * Ap * Bp (+ C if beta_one)` over `dc` depth steps.
    ///
    /// # Safety
    /// `a` and `b` are panels of `panel_len(dc, MR)` and `panel_len(dc, NR)` elements; the C
    /// tile's rows and columns are writable and touched by no other thread; `1 <= rows <= MR`,
    /// `1 <= cols <= NR`; the CPU has the kernel's features.
    unsafe fn tile(&self, dc: usize, a: *const Self::Packed, b: *const Self::Packed, c: CTile);
}

/// Products with fewer multiply-adds than this run on the calling thread: waking the pool costs
/// tens of microseconds, about what one core needs for this much work.
const PARALLEL_MIN_FMAS: usize = 1 << 22;

/// Compute tasks per thread and k block: enough that rayon evens out unequal chunks and a
/// thread slowed by other work, few enough that each task still reuses its B chunk in L2 over
/// many A panels.
const TASKS_PER_THREAD: usize = 4;

/// The output pointer, shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks only write disjoint tiles of C through it (see `run`), while `run` holds the
// exclusive borrow of C.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Element `offset` of C. (A method, so closures capture the whole Send + Sync wrapper.)
    ///
    /// # Safety
    /// `offset` is inside C.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded caller contract.
        unsafe { self.0.add(offset) }
    }
}

/// Splits `len` into `parts` chunks that are multiples of `unit` (the last one shorter);
/// returns the chunk length.
fn chunk_len(len: usize, parts: usize, unit: usize) -> usize {
    len.div_ceil(parts.max(1)).div_ceil(unit) * unit
}

/// One step of the product: an outer block (rows `m0..m0 + mb`, columns `n0..n0 + nb`) and a
/// k block (`d0..d0 + dc`); `beta_one` when C already holds a partial sum (or accumulates).
#[derive(Clone, Copy)]
struct Step {
    m0: usize,
    mb: usize,
    n0: usize,
    nb: usize,
    d0: usize,
    dc: usize,
    beta_one: bool,
    nc: usize,
}

/// The cache blocking of one product. The k blocks depend on the depth only (never on the
/// threads or on whether B was prepacked), so every element of C is summed the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Depth of every k block but the last (even, so bf16 pairs never straddle two blocks).
    pub kc: usize,
    /// Rows of every outer row block but the last (a multiple of MR).
    pub mco: usize,
    /// Columns of every outer column block but the last (a multiple of NR).
    pub nco: usize,
    /// Widest column chunk of one compute task.
    pub nc: usize,
}

impl Blocking {
    pub(crate) fn new<K: MicroKernel>(m: usize, n: usize, depth: usize) -> Self {
        Blocking {
            // Outer blocks of equal size in whole panels (m = 4100 is two blocks of 2058 rows
            // rather than 4088 + a sliver of 12).
            mco: chunk_len(m, m.div_ceil(K::MCO), K::MR),
            nco: chunk_len(n, n.div_ceil(K::NCO), K::NR),
            // k blocks of equal depth: k = 1536 is 3 x 512 in f32 rather than 2 x 640 + 256, a
            // sliver whose tiles spend more on C than on k.
            kc: chunk_len(depth, depth.div_ceil(K::KC), 2),
            nc: K::NC,
        }
    }

    /// Elements of the packed B block of columns `n0..` (`nb` wide) and depth `d0..` in a
    /// prepacked B of `n x depth`: n blocks one after the other, each its k blocks in order,
    /// each `nb.div_ceil(NR)` panels. Returns (offset, length).
    pub(crate) fn b_block<K: MicroKernel>(
        &self,
        depth: usize,
        (n0, nb): (usize, usize),
        (d0, dc): (usize, usize),
    ) -> (usize, usize) {
        let full_k = depth / self.kc * K::panel_len(self.kc, K::NR);
        let k_total = full_k + K::panel_len(depth % self.kc, K::NR);
        let panels = nb.div_ceil(K::NR);
        let offset = n0 / self.nco * (self.nco / K::NR) * k_total
            + panels * (d0 / self.kc) * K::panel_len(self.kc, K::NR);
        (offset, panels * K::panel_len(dc, K::NR))
    }

    /// Elements of a whole prepacked B of `n x depth`.
    pub(crate) fn b_len<K: MicroKernel>(&self, n: usize, depth: usize) -> usize {
        let last = n - 1 - (n - 1) % self.nco;
        let (offset, len) = self.b_block::<K>(depth, (last, n - last), (0, depth));
        offset + len
    }
}

/// Where the panels of B come from.
pub(crate) enum BSource<'a, P> {
    /// Packed block by block from the operand into the thread's buffer.
    Pack(Operand<'a>),
    /// Prepacked (see [`Blocking::b_block`]) with the same blocking.
    Packed(&'a [P]),
}

/// `C = alpha * A * B (+ C)` with kernel `kern`; B is `depth x n`. `m`, `n` and `depth` are
/// all non-zero.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<K: MicroKernel>(
    kern: &K,
    alpha: f32,
    a: &MatRef<'_>,
    b: BSource<'_, K::Packed>,
    n: usize,
    accumulate: bool,
    c: MatMut<'_>,
    parallel: bool,
) {
    let (m, depth) = (a.rows, a.cols);
    let threads = if parallel && m.saturating_mul(n).saturating_mul(depth) >= PARALLEL_MIN_FMAS {
        rayon::current_num_threads()
    } else {
        1
    };
    let blk = Blocking::new::<K>(m, n, depth);
    let Blocking { kc, mco, nco, nc } = blk;
    let a_len = mco / K::MR * K::panel_len(kc, K::MR);
    let b_len = match b {
        BSource::Pack(_) => nco / K::NR * K::panel_len(kc, K::NR),
        BSource::Packed(_) => 0,
    };
    let out = Out {
        ptr: OutPtr(c.data.as_mut_ptr()),
        ldc: c.row_stride,
        alpha,
    };
    let a_op = Operand::rows_of(a);

    super::buffer::with_buffers::<K::Packed, _>(a_len, b_len, |abuf, bbuf| {
        // k blocks outside the row blocks: each B block is packed once, whatever the number of
        // row blocks; every element of C still sees its k blocks in order.
        for n0 in (0..n).step_by(nco) {
            for d0 in (0..depth).step_by(kc) {
                let (nb, dc) = (nco.min(n - n0), kc.min(depth - d0));
                for m0 in (0..m).step_by(mco) {
                    let step = Step {
                        m0,
                        mb: mco.min(m - m0),
                        n0,
                        nb,
                        d0,
                        dc,
                        beta_one: accumulate || d0 > 0,
                        nc,
                    };
                    let b_panels: &[K::Packed] = match &b {
                        BSource::Pack(b_op) => {
                            let b_op = (m0 == 0).then_some(b_op);
                            pack_step(kern, (&a_op, b_op), &step, threads, abuf, bbuf);
                            bbuf
                        }
                        BSource::Packed(all) => {
                            pack_step(kern, (&a_op, None), &step, threads, abuf, bbuf);
                            let (offset, len) = blk.b_block::<K>(depth, (n0, nb), (d0, dc));
                            &all[offset..offset + len]
                        }
                    };
                    compute_step(kern, &step, threads, abuf, b_panels, out);
                }
            }
        }
    });
}

/// Where the tiles go: C, its row stride, and alpha.
#[derive(Clone, Copy)]
struct Out {
    ptr: OutPtr,
    ldc: usize,
    alpha: f32,
}

/// Packs the A block and the B block of `step` into `abuf` and `bbuf`, in groups of panels (a
/// few per thread when parallel; a group of lane-contiguous panels is read row by row).
fn pack_step<K: MicroKernel>(
    kern: &K,
    (a_op, b_op): (&Operand<'_>, Option<&Operand<'_>>),
    step: &Step,
    threads: usize,
    abuf: &mut [K::Packed],
    bbuf: &mut [K::Packed],
) {
    let Step {
        m0,
        mb,
        n0,
        nb,
        d0,
        dc,
        ..
    } = *step;
    let (alen, blen) = (K::panel_len(dc, K::MR), K::panel_len(dc, K::NR));
    let (a_count, b_count) = (mb.div_ceil(K::MR), nb.div_ceil(K::NR));
    let group = |count: usize| {
        if threads > 1 {
            count.div_ceil(TASKS_PER_THREAD * threads)
        } else {
            count
        }
    };
    let (a_group, b_group) = (group(a_count), group(b_count));
    let pack_a = |(i, dst): (usize, &mut [K::Packed])| {
        let lane0 = i * a_group * K::MR;
        let lanes = (a_group * K::MR).min(mb - lane0);
        kern.pack(
            a_op,
            PanelSpec {
                lane0: m0 + lane0,
                lanes,
                d0,
                dc,
                width: K::MR,
            },
            dst,
        );
    };
    let pack_b = |b_op: &Operand<'_>, (j, dst): (usize, &mut [K::Packed])| {
        let lane0 = j * b_group * K::NR;
        let lanes = (b_group * K::NR).min(nb - lane0);
        kern.pack(
            b_op,
            PanelSpec {
                lane0: n0 + lane0,
                lanes,
                d0,
                dc,
                width: K::NR,
            },
            dst,
        );
    };
    let a_panels = &mut abuf[..a_count * alen];
    let b_panels = &mut bbuf[..if b_op.is_some() { b_count * blen } else { 0 }];
    if threads > 1 {
        rayon::join(
            || {
                a_panels
                    .par_chunks_mut(a_group * alen)
                    .enumerate()
                    .for_each(pack_a)
            },
            || {
                if let Some(b_op) = b_op {
                    b_panels
                        .par_chunks_mut(b_group * blen)
                        .enumerate()
                        .for_each(|job| pack_b(b_op, job))
                }
            },
        );
    } else {
        pack_a((0, a_panels));
        if let Some(b_op) = b_op {
            pack_b(b_op, (0, b_panels));
        }
    }
}

/// Computes the tiles of `step` from its packed panels, as tasks over a grid of (row chunk,
/// column chunk): column chunks of at most NC (as many as a multiple of the threads, so they
/// are equal and shared evenly), then enough row chunks for a few tasks per thread.
fn compute_step<K: MicroKernel>(
    kern: &K,
    step: &Step,
    threads: usize,
    a_panels: &[K::Packed],
    b_panels: &[K::Packed],
    out: Out,
) {
    let Step {
        m0,
        mb,
        n0,
        nb,
        dc,
        beta_one,
        nc,
        ..
    } = *step;
    let (alen, blen) = (K::panel_len(dc, K::MR), K::panel_len(dc, K::NR));
    let col_parts = nb
        .div_ceil(nc)
        .next_multiple_of(threads)
        .min(nb.div_ceil(K::NR));
    let cols = chunk_len(nb, col_parts, K::NR);
    let row_parts = if threads > 1 {
        (TASKS_PER_THREAD * threads).div_ceil(col_parts)
    } else {
        1
    };
    let rows = chunk_len(mb, row_parts, K::MR);
    let (row_tasks, col_tasks) = (mb.div_ceil(rows), nb.div_ceil(cols));
    let task = |t: usize| {
        let (r0, c0) = (t / col_tasks * rows, t % col_tasks * cols);
        for i0 in (r0..mb.min(r0 + rows)).step_by(K::MR) {
            let ap = &a_panels[i0 / K::MR * alen..][..alen];
            for j0 in (c0..nb.min(c0 + cols)).step_by(K::NR) {
                let bp = &b_panels[j0 / K::NR * blen..][..blen];
                let (rows, cols) = (K::MR.min(mb - i0), K::NR.min(nb - j0));
                let offset = (m0 + i0) * out.ldc + n0 + j0;
                // SAFETY: the panels have the kernel's lengths; the tile (rows m0 + i0..,
                // columns n0 + j0.., at most MR x NR) is inside C (gemm checked C's length and
                // row_stride >= cols); tiles of different tasks are disjoint, and `run` holds
                // C's exclusive borrow until all tasks end.
                unsafe {
                    let (ldc, alpha) = (out.ldc, out.alpha);
                    let c = CTile {
                        ptr: out.ptr.at(offset),
                        ldc,
                        rows,
                        cols,
                        alpha,
                        beta_one,
                    };
                    kern.tile(dc, ap.as_ptr(), bp.as_ptr(), c)
                };
            }
        }
    };
    if threads > 1 {
        (0..row_tasks * col_tasks)
            .into_par_iter()
            .with_max_len(1)
            .for_each(task);
    } else {
        (0..row_tasks * col_tasks).for_each(task);
    }
}
