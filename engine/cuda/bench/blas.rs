//! The unfused LoRA sequence on cuBLAS (GPU only), the comparison for the fused kernels:
//!
//! forward   y = x W^T;  h = x A'^T;  y += s h B'^T            (A', B': the f32 masters cast to
//!                                                              the element type, as autocast)
//! backward  dX = dY W;  g = dY B';  dX += s g A';  dA += s g^T x;  dB += s dY^T h
//!
//! Five or three products with f32 accumulation (CUBLAS_COMPUTE_32F: no TF32 for f32, as
//! PyTorch's default), h and g stored in the element type between them.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::CudaBlas;

use super::lora::{bytes, flops, LoraBuffers};
use super::Pass;
use super::Case;
use crate::engine::cuda::kernels::cast::cast;
use crate::engine::cuda::kernels::lora::LoraDims;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};

/// The implementation name of the unfused rows.
pub const IMP: &str = "unfused-cublas";

/// Why cuBLAS cannot run here, or `None`.
pub fn unavailable(dev: &Device) -> Option<String> {
    if !dev.is_gpu() {
        return Some("the unfused sequence runs on cuBLAS: GPU only".into());
    }
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Some("cuBLAS (libcublas.so) could not be loaded".into());
    }
    None
}

struct Blas {
    blas: CudaBlas,
}

fn data_type(op: &'static str, e: Elem) -> Result<cudaDataType> {
    Ok(match e {
        Elem::F32 => cudaDataType::CUDA_R_32F,
        Elem::BF16 => cudaDataType::CUDA_R_16BF,
        Elem::F16 => cudaDataType::CUDA_R_16F,
        other => return Err(Error::shape(op, format!("no cuBLAS product of {other:?}"))),
    })
}

impl Blas {
    fn new(dev: &Device) -> Result<Blas> {
        if let Some(why) = unavailable(dev) {
            return Err(Error::device(dev.name(), why));
        }
        #[allow(unreachable_patterns)] // without the shim a GPU is the only device
        let g = match dev {
            Device::Gpu(g) => g,
            _ => return Err(Error::device(dev.name(), "not a GPU")),
        };
        // cudarc panics where the library fails to load after all.
        let made = std::panic::catch_unwind(|| CudaBlas::new(g.stream().clone()));
        match made {
            Ok(Ok(blas)) => Ok(Blas { blas }),
            Ok(Err(e)) => Err(Error::device(dev.name(), format!("cuBLAS handle: {e}"))),
            Err(_) => Err(Error::device(dev.name(), "cuBLAS failed while loading")),
        }
    }

    /// Row-major `c [m, n] = alpha op(a) op(b) + beta c`, `op(a)` `[m, k]`, `op(b)` `[k, n]`;
    /// `at`: a is stored `[k, m]`; `bt`: b is stored `[n, k]`. a and b share a type; c is of
    /// theirs or f32.
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, dev: &Device, (m, n, k): (usize, usize, usize), alpha: f32, a: &Buffer, at: bool, b: &Buffer, bt: bool, beta: f32, c: &mut Buffer) -> Result<()> {
        let op = "cublas_gemm";
        if a.elem() != b.elem() || (c.elem() != a.elem() && c.elem() != Elem::F32) {
            return Err(Error::shape(op, format!("{:?} x {:?} into {:?}", a.elem(), b.elem(), c.elem())));
        }
        if a.len() != m * k || b.len() != k * n || c.len() != m * n {
            return Err(Error::shape(op, format!("[{m}x{k}] x [{k}x{n}] with {}, {} and {} elements", a.len(), b.len(), c.len())));
        }
        dev.check_resident(&[a, b, c])?;
        let int = |v: usize| super::super::kernels::int(op, "size", v);
        let cm = col_major((m, n, k), at, bt);
        let trans = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        // SAFETY: the three buffers live on this GPU with the sizes checked above; alpha and
        // beta are host f32 values (the handle's default pointer mode) alive during the call.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                trans(cm.trans_first),
                trans(cm.trans_second),
                int(cm.m)?,
                int(cm.n)?,
                int(cm.k)?,
                &alpha as *const f32 as *const c_void,
                b.addr() as *const c_void,
                data_type(op, b.elem())?,
                int(cm.ld_first)?,
                a.addr() as *const c_void,
                data_type(op, a.elem())?,
                int(cm.ld_second)?,
                &beta as *const f32 as *const c_void,
                c.addr() as *mut c_void,
                data_type(op, c.elem())?,
                int(cm.ldc)?,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::device(dev.name(), format!("cublasGemmEx: {e}")))
    }
}

/// The arguments of a column-major (BLAS) product that computes the row-major `c [m, n] =
/// op(a) op(b)` (`at`: a stored `[k, m]`; `bt`: b stored `[n, k]`): a row-major matrix read
/// column-major is its transpose, so BLAS computes `c^T = op(b)^T op(a)^T`, b first. Public
/// for its test (tests/cli_bench.rs checks it against a plain column-major product).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColMajor {
    /// Transpose the first operand (b) / the second (a).
    pub trans_first: bool,
    pub trans_second: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ld_first: usize,
    pub ld_second: usize,
    pub ldc: usize,
}

pub fn col_major((m, n, k): (usize, usize, usize), at: bool, bt: bool) -> ColMajor {
    ColMajor {
        trans_first: bt,
        trans_second: at,
        m: n,
        n: m,
        k,
        ld_first: if bt { k } else { n },
        ld_second: if at { m } else { k },
        ldc: n,
    }
}

/// The unfused sequence's buffers: the layer's, and the casts and projections between the
/// products.
pub(super) struct Unfused {
    blas: Blas,
    x: LoraBuffers,
    d: LoraDims,
    scale: f32,
    /// The masters in the element type (cast in the forward; the backward reuses them).
    a_cast: Buffer,
    b_cast: Buffer,
    h: Buffer,
    g: Buffer,
}

impl Unfused {
    pub(super) fn case(dev: &Device, x: LoraBuffers, d: LoraDims, scale: f32, pass: Pass) -> Result<Case> {
        let blas = Blas::new(dev)?;
        let elem = x.elem;
        let mut u = Unfused {
            blas,
            a_cast: dev.alloc(elem, d.r * d.din)?,
            b_cast: dev.alloc(elem, d.dout * d.r)?,
            h: dev.alloc(elem, d.tokens * d.r)?,
            g: dev.alloc(elem, d.tokens * d.r)?,
            x,
            d,
            scale,
        };
        if pass == Pass::Backward {
            u.forward(dev)?; // the casts and h the backward reads
        }
        let dev = dev.clone();
        Ok(Case::new(bytes(&d, elem, pass), flops(&d, pass), move || {
            if pass.forward() {
                u.forward(&dev)?;
            }
            if pass.backward() {
                u.backward(&dev)?;
            }
            Ok(())
        }))
    }

    fn forward(&mut self, dev: &Device) -> Result<()> {
        let LoraDims { tokens: t, din: i, dout: o, r } = self.d;
        let x = &mut self.x;
        if x.elem != Elem::F32 {
            cast(dev, &x.a, &mut self.a_cast)?;
            cast(dev, &x.b, &mut self.b_cast)?;
        }
        let (a, b) = low_rank(x.elem, (&x.a, &x.b), (&self.a_cast, &self.b_cast));
        self.blas.gemm(dev, (t, o, i), 1.0, &x.x, false, &x.w, true, 0.0, &mut x.y)?;
        self.blas.gemm(dev, (t, r, i), 1.0, &x.x, false, a, true, 0.0, &mut self.h)?;
        self.blas.gemm(dev, (t, o, r), self.scale, &self.h, false, b, true, 1.0, &mut x.y)
    }

    fn backward(&mut self, dev: &Device) -> Result<()> {
        let LoraDims { tokens: t, din: i, dout: o, r } = self.d;
        let (s, x, blas) = (self.scale, &mut self.x, &self.blas);
        let (a, b) = low_rank(x.elem, (&x.a, &x.b), (&self.a_cast, &self.b_cast));
        blas.gemm(dev, (t, i, o), 1.0, &x.dy, false, &x.w, false, 0.0, &mut x.dx)?;
        blas.gemm(dev, (t, r, o), 1.0, &x.dy, false, b, false, 0.0, &mut self.g)?;
        blas.gemm(dev, (t, i, r), s, &self.g, false, a, false, 1.0, &mut x.dx)?;
        blas.gemm(dev, (r, i, t), s, &self.g, true, &x.x, false, 1.0, &mut x.da)?;
        blas.gemm(dev, (o, r, t), s, &x.dy, true, &self.h, false, 1.0, &mut x.db)
    }
}

/// The LoRA matrices in the element type: the casts, or the f32 masters themselves for f32.
fn low_rank<'a>(elem: Elem, masters: (&'a Buffer, &'a Buffer), casts: (&'a Buffer, &'a Buffer)) -> (&'a Buffer, &'a Buffer) {
    if elem == Elem::F32 {
        masters
    } else {
        casts
    }
}
