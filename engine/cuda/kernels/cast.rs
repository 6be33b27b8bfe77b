//! Launcher for kernels/cast.cu: element type conversions between f32 and bf16/f16.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use crate::engine::error::{Error, Result};

/// `y = x` converted to `y`'s element type (round to nearest even into 16 bits).
pub fn cast(dev: &Device, x: &Buffer, y: &mut Buffer) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::shape("cast", format!("{} elements into {}", x.len(), y.len())));
    }
    let kernel = match (x.elem(), y.elem()) {
        (Elem::F32, Elem::BF16) => "cast_f32_bf16",
        (Elem::F32, Elem::F16) => "cast_f32_f16",
        (Elem::BF16, Elem::F32) => "cast_bf16_f32",
        (Elem::F16, Elem::F32) => "cast_f16_f32",
        (a, b) => return Err(Error::shape("cast", format!("no cast from {a:?} to {b:?}"))),
    };
    let n = x.len();
    // Grid-stride kernel: a few thousand blocks saturate any GPU; more only cost scheduling.
    let dims = Launch::linear(n.div_ceil(256).clamp(1, 4096), 256);
    dev.launch("cast", kernel, dims, &[KArg::In(x), KArg::Out(y), KArg::I64(n as i64)])
}
