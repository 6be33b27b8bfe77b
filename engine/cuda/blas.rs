//! cuBLAS on the GPU (loaded at run time, like the driver): row-major products with f32
//! accumulation for what a hand-written kernel would only do slower, the frozen projections of
//! the training step (models/bert_cuda), and the unfused comparison rows of the benches.
//! GPU only: on the host shim the fused kernels do the same work.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::CudaBlas;

use super::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};

/// Why cuBLAS cannot run here, or `None`.
pub fn unavailable(dev: &Device) -> Option<String> {
    if !dev.is_gpu() {
        return Some("cuBLAS runs on a GPU only (not on the host shim)".into());
    }
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Some("cuBLAS (libcublas.so) could not be loaded".into());
    }
    None
}

/// A cuBLAS handle on the GPU's stream.
pub struct Blas {
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
    /// A handle on `dev`'s stream: a typed error on the shim or where libcublas is missing.
    pub fn new(dev: &Device) -> Result<Blas> {
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
    pub fn gemm(&self, dev: &Device, (m, n, k): (usize, usize, usize), alpha: f32, a: &Buffer, at: bool, b: &Buffer, bt: bool, beta: f32, c: &mut Buffer) -> Result<()> {
        let op = "cublas_gemm";
        if a.elem() != b.elem() || (c.elem() != a.elem() && c.elem() != Elem::F32) {
            return Err(Error::shape(op, format!("{:?} x {:?} into {:?}", a.elem(), b.elem(), c.elem())));
        }
        if a.len() != m * k || b.len() != k * n || c.len() != m * n {
            return Err(Error::shape(op, format!("[{m}x{k}] x [{k}x{n}] with {}, {} and {} elements", a.len(), b.len(), c.len())));
        }
        dev.check_resident(&[a, b, c])?;
        let int = |v: usize| super::kernels::int(op, "size", v);
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

