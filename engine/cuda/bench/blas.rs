//! The unfused LoRA sequence on cuBLAS (GPU only), the comparison for the fused kernels:
//!
//! forward   y = x W^T;  h = x A'^T;  y += s h B'^T            (A', B': the f32 masters cast to
//!                                                              the element type, as autocast)
//! backward  dX = dY W;  g = dY B';  dX += s g A';  dA += s g^T x;  dB += s dY^T h
//!
//! Five or three products with f32 accumulation (CUBLAS_COMPUTE_32F: no TF32 for f32, as
//! PyTorch's default), h and g stored in the element type between them.

use super::lora::{bytes, flops, LoraBuffers};
use super::Pass;
use super::Case;
use crate::engine::cuda::kernels::cast::cast;
use crate::engine::cuda::kernels::lora::LoraDims;
use crate::engine::cuda::blas::Blas;
pub use crate::engine::cuda::blas::unavailable;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::Result;

/// The implementation name of the unfused rows.
pub const IMP: &str = "unfused-cublas";

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
