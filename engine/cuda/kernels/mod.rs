//! Launchers, one file per kernel file of `kernels/`: each checks its operands' sizes and
//! types, chooses the grid and block, and launches on any [`super::Device`].

pub mod activation;
pub mod adamw;
pub mod align;
pub mod attention;
pub mod bias;
pub mod cast;
pub mod cross_entropy;
pub mod dense_grad;
pub mod embedding;
pub mod lora;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod residual;

use super::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};

/// Which kernels run, where a kernel file has a tensor-core twin (attention_mma.cu,
/// lora_mma.cu): the tensor-core path needs bf16/f16 elements and a GPU of sm_80 or newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// Tensor cores where they can run, else the scalar path.
    Auto,
    Scalar,
    TensorCores,
}

/// Whether `path` resolves to the tensor-core kernels for `elem` on `dev`. `Auto` picks them
/// on a GPU of sm_80+ for bf16/f16; `TensorCores` also runs on the host shim, which emulates
/// the matrix instruction (kernels/mma.cuh), so the tests cover that path's logic without a
/// GPU; elsewhere it is an error.
pub fn uses_tensor_cores(op: &'static str, dev: &Device, elem: Elem, path: KernelPath) -> Result<bool> {
    let half = matches!(elem, Elem::BF16 | Elem::F16);
    match path {
        KernelPath::Auto => Ok(half && dev.has_tensor_cores()),
        KernelPath::Scalar => Ok(false),
        KernelPath::TensorCores if half && (dev.has_tensor_cores() || !dev.is_gpu()) => Ok(true),
        KernelPath::TensorCores => Err(Error::shape(
            op,
            format!("the tensor-core path needs a GPU of sm_80 or newer and bf16/f16 elements ({} with {elem:?})", dev.name()),
        )),
    }
}

/// Checks that `b` has `len` elements of `elem`.
pub(crate) fn expect(op: &'static str, what: &str, b: &Buffer, elem: Elem, len: usize) -> Result<()> {
    if b.elem() != elem || b.len() != len {
        return Err(Error::shape(op, format!("{what}: expected {len} x {elem:?}, found {} x {:?}", b.len(), b.elem())));
    }
    Ok(())
}

/// Checks that `b` is a float buffer of `len` elements of the same type as `like`.
pub(crate) fn expect_float(op: &'static str, what: &str, b: &Buffer, elem: Elem, len: usize) -> Result<()> {
    if !elem.is_float() {
        return Err(Error::shape(op, format!("{what}: {elem:?} is not a float type")));
    }
    expect(op, what, b, elem, len)
}

/// A size as the `int` a kernel takes.
pub(crate) fn int(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} does not fit a 32-bit int")))
}
