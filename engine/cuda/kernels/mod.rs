//! Launchers, one file per kernel file of `kernels/`: each checks its operands' sizes and
//! types, chooses the grid and block, and launches on any [`super::Device`].

pub mod activation;
pub mod adamw;
pub mod align;
pub mod attention;
pub mod cast;
pub mod cross_entropy;
pub mod embedding;
pub mod lora;
pub mod norm;
pub mod reduce;

use super::{Buffer, Elem};
use crate::engine::error::{Error, Result};

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
