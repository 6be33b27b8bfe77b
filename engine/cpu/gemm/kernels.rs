//! The kernel paths, their cache blocking, and the choice among them at run time.
//!
//! - `Avx512Bf16`: bf16 pair panels and VDPBF16PS (Precision::Bf16 on CPUs with AVX-512 BF16);
//! - `Avx512`: f32 panels and the 14 x 32 AVX-512 kernel;
//! - `Avx2`: f32 panels and the 6 x 16 AVX2 + FMA kernel;
//! - `Portable`: f32 panels and the plain-Rust kernel (`kernel_portable.rs`, vectorised by the
//!   compiler), for CPUs with none of these;
//! - `Reference`: the unblocked loops of `reference.rs`; never chosen, kept as the tests' oracle.
//!
//! The f32 paths also serve Precision::Bf16 where VDPBF16PS is missing: the packer rounds both
//! operands to bf16, and the products of bf16 values are exact in f32.
//!
//! Blocking for Zen 4 (32 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3): an A panel
//! (MR x KC, 28 KiB for f32 at KC = 512 and for bf16 at KC = 1024) is reused from L1 (or L2,
//! which feeds the 14 broadcasts per step easily) while the B panels of a task's column chunk
//! (KC x NC, 512 KiB) stay in L2; the packed A block (up to MCO x KC, 8 MiB) lives in L3. A
//! deep KC means fewer passes over C (k = 2048 is 2 blocks in bf16, 4 in f32), which is what
//! costs when C does not fit in the caches; MCO = 4096 keeps the products of a training step
//! (up to 4096 tokens) in one row block, so each k block is one pack phase and one compute
//! phase.

use super::driver::{CTile, MicroKernel};
use super::pack::{self, Operand, PanelSpec};
use super::Precision;

/// A way to compute the product; `best` picks the fastest this CPU supports (the one [`gemm`]
/// uses). [`gemm_with`] forces one, for tests and benchmarks.
///
/// [`gemm`]: super::gemm
/// [`gemm_with`]: super::gemm_with
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// VDPBF16PS on bf16 pair panels (Precision::Bf16 only).
    Avx512Bf16,
    /// The 14 x 32 AVX-512 f32 kernel.
    Avx512,
    /// The 6 x 16 AVX2 + FMA f32 kernel.
    Avx2,
    /// The plain-Rust packed kernel, vectorised by the compiler (any CPU).
    Portable,
    /// The unblocked loops of the test oracle; never chosen by `best`.
    Reference,
}

impl KernelPath {
    /// The fastest path for `precision` on this CPU.
    pub fn best(precision: Precision) -> Self {
        if precision == Precision::Bf16 && Self::Avx512Bf16.supported() {
            Self::Avx512Bf16
        } else if Self::Avx512.supported() {
            Self::Avx512
        } else if Self::Avx2.supported() {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                // The AVX-512 packers use BW (16-bit lanes); every AVX-512 CPU since Skylake-X
                // has it.
                Self::Avx512Bf16 => {
                    Self::Avx512.supported() && is_x86_feature_detected!("avx512bf16")
                }
                Self::Avx512 => {
                    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
                }
                Self::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                Self::Portable | Self::Reference => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            matches!(self, Self::Portable | Self::Reference)
        }
    }
}

/// Something to do with the kernel of a path (a generic method, which a closure cannot be).
pub(crate) trait WithKernel {
    type Out;
    fn call<K: MicroKernel>(self, kern: &K) -> Self::Out;
}

/// Calls `w` with the kernel of `path` for `precision`; `None` for `Reference`, which has none.
/// The f32 kernels round operands to bf16 while packing when `precision` is Bf16.
pub(crate) fn with_kernel<W: WithKernel>(
    path: KernelPath,
    precision: Precision,
    w: W,
) -> Option<W::Out> {
    let round = precision == Precision::Bf16;
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512Bf16 => Some(w.call(&Avx512Bf16)),
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => Some(w.call(&Avx512F32 { round })),
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => Some(w.call(&Avx2F32 { round })),
        KernelPath::Portable => Some(w.call(&PortableF32 { round })),
        _ => None,
    }
}

/// The AVX-512 f32 kernel; `round` rounds operands to bf16 while packing (Precision::Bf16).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512F32 {
    pub round: bool,
}

#[cfg(target_arch = "x86_64")]
impl MicroKernel for Avx512F32 {
    const PATH: KernelPath = KernelPath::Avx512;
    type Packed = f32;
    const MR: usize = super::kernel_avx512::MR;
    const NR: usize = super::kernel_avx512::NR;
    const KC: usize = 512;
    const NC: usize = 256;
    const MCO: usize = 4096;
    const NCO: usize = 2048;

    fn panel_len(dc: usize, width: usize) -> usize {
        pack::f32_panel_len(dc, width)
    }

    fn pack(&self, op: &Operand<'_>, p: PanelSpec, dst: &mut [f32]) {
        pack::pack_f32_panels(op, p, self.round, true, dst);
    }

    unsafe fn tile(&self, dc: usize, a: *const f32, b: *const f32, c: CTile) {
        // SAFETY: forwarded contract; this kernel is only built when the path is supported.
        unsafe { super::kernel_avx512::tile(dc, a, b, c) }
    }
}

/// The AVX-512 BF16 kernel on bf16 pair panels.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512Bf16;

#[cfg(target_arch = "x86_64")]
impl MicroKernel for Avx512Bf16 {
    const PATH: KernelPath = KernelPath::Avx512Bf16;
    type Packed = u16;
    const MR: usize = super::kernel_bf16::MR;
    const NR: usize = super::kernel_bf16::NR;
    const KC: usize = 1024;
    const NC: usize = 256;
    const MCO: usize = 4096;
    const NCO: usize = 2048;

    fn panel_len(dc: usize, width: usize) -> usize {
        pack::pair_panel_len(dc, width)
    }

    fn pack(&self, op: &Operand<'_>, p: PanelSpec, dst: &mut [u16]) {
        pack::pack_pair_panels(op, p, true, dst);
    }

    unsafe fn tile(&self, dc: usize, a: *const u16, b: *const u16, c: CTile) {
        // SAFETY: forwarded contract (dc.div_ceil(2) pair steps are what the panels hold).
        unsafe { super::kernel_bf16::tile(dc.div_ceil(2), a, b, c) }
    }
}

/// The AVX2 + FMA f32 kernel; `round` as for [`Avx512F32`].
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2F32 {
    pub round: bool,
}

#[cfg(target_arch = "x86_64")]
impl MicroKernel for Avx2F32 {
    const PATH: KernelPath = KernelPath::Avx2;
    type Packed = f32;
    const MR: usize = super::kernel_avx2::MR;
    const NR: usize = super::kernel_avx2::NR;
    const KC: usize = 256;
    const NC: usize = 512;
    const MCO: usize = 2048;
    const NCO: usize = 2048;

    fn panel_len(dc: usize, width: usize) -> usize {
        pack::f32_panel_len(dc, width)
    }

    fn pack(&self, op: &Operand<'_>, p: PanelSpec, dst: &mut [f32]) {
        pack::pack_f32_panels(op, p, self.round, false, dst);
    }

    unsafe fn tile(&self, dc: usize, a: *const f32, b: *const f32, c: CTile) {
        // SAFETY: forwarded contract; this kernel is only built when the path is supported.
        unsafe { super::kernel_avx2::tile(dc, a, b, c) }
    }
}

/// The portable kernel; `round` as for [`Avx512F32`].
pub(crate) struct PortableF32 {
    pub round: bool,
}

impl MicroKernel for PortableF32 {
    const PATH: KernelPath = KernelPath::Portable;
    type Packed = f32;
    const MR: usize = super::kernel_portable::MR;
    const NR: usize = super::kernel_portable::NR;
    // An A panel (MR x KC, 8 KiB at MR = 8) stays in L1; a column chunk of B (KC x NC,
    // 512 KiB) in a typical 1 MiB L2.
    const KC: usize = 256;
    const NC: usize = 512;
    const MCO: usize = 2048;
    const NCO: usize = 2048;

    fn panel_len(dc: usize, width: usize) -> usize {
        pack::f32_panel_len(dc, width)
    }

    fn pack(&self, op: &Operand<'_>, p: PanelSpec, dst: &mut [f32]) {
        pack::pack_f32_panels(op, p, self.round, false, dst);
    }

    unsafe fn tile(&self, dc: usize, a: *const f32, b: *const f32, c: CTile) {
        // SAFETY: forwarded contract; plain Rust needs no CPU feature.
        unsafe { super::kernel_portable::tile(dc, a, b, c) }
    }
}
