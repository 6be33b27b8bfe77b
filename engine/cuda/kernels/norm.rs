//! Launchers for kernels/norm.cu: LayerNorm and RMSNorm, forward and backward.
//!
//! Layouts as the kernel file says: `x`, `y`, `dy`, `dx` `[rows, d]` of one float type; `w`,
//! `b`, `dw`, `db` f32 `[d]`; `mean`, `rstd` f32 `[rows]`. `dx` is overwritten; `dw` and `db`
//! accumulate.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::reduce::{chunk_rows, colsum_accumulate};
use super::{expect, expect_float, int};
use crate::engine::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Layer,
    Rms,
}

impl NormKind {
    fn prefix(self) -> &'static str {
        match self {
            NormKind::Layer => "layernorm",
            NormKind::Rms => "rmsnorm",
        }
    }
}

/// Statistics from the forward pass: per-row mean (LayerNorm only) and rstd.
pub struct NormStats {
    pub mean: Option<Buffer>,
    pub rstd: Buffer,
}

fn check(op: &'static str, x: &Buffer, w: &Buffer, rows: usize, d: usize) -> Result<(i32, i32)> {
    if d == 0 {
        return Err(Error::shape(op, "the normalised dimension is empty"));
    }
    expect_float(op, "x", x, x.elem(), rows * d)?;
    expect(op, "weight", w, Elem::F32, d)?;
    Ok((int(op, "rows", rows)?, int(op, "d", d)?))
}

/// Forward: writes `y` and returns the statistics the backward needs.
#[allow(clippy::too_many_arguments)]
pub fn norm_forward(
    dev: &Device,
    kind: NormKind,
    x: &Buffer,
    w: &Buffer,
    b: Option<&Buffer>,
    y: &mut Buffer,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<NormStats> {
    let op = "norm_forward";
    let (r, dd) = check(op, x, w, rows, d)?;
    expect(op, "y", y, x.elem(), rows * d)?;
    if let Some(b) = b {
        if kind == NormKind::Rms {
            return Err(Error::shape(op, "RMSNorm has no bias"));
        }
        expect(op, "bias", b, Elem::F32, d)?;
    }
    let mut rstd = dev.alloc(Elem::F32, rows)?;
    let dims = Launch::warp_per_row(rows, 4);
    let kernel = format!("{}_fwd_{}", kind.prefix(), x.elem().suffix());
    let mean = match kind {
        NormKind::Layer => {
            let mut mean = dev.alloc(Elem::F32, rows)?;
            let args = [KArg::In(x), KArg::In(w), KArg::Opt(b), KArg::Out(y), KArg::Out(&mut mean), KArg::Out(&mut rstd), KArg::I32(r), KArg::I32(dd), KArg::F32(eps)];
            dev.launch("norm", &kernel, dims, &args)?;
            Some(mean)
        }
        NormKind::Rms => {
            let args = [KArg::In(x), KArg::In(w), KArg::Out(y), KArg::Out(&mut rstd), KArg::I32(r), KArg::I32(dd), KArg::F32(eps)];
            dev.launch("norm", &kernel, dims, &args)?;
            None
        }
    };
    Ok(NormStats { mean, rstd })
}

/// Gradients to compute: `dx` is overwritten, `dw` and `db` (LayerNorm only) accumulate.
pub struct NormGradsOut<'a> {
    pub dx: Option<&'a mut Buffer>,
    pub dw: Option<&'a mut Buffer>,
    pub db: Option<&'a mut Buffer>,
}

#[allow(clippy::too_many_arguments)]
pub fn norm_backward(
    dev: &Device,
    kind: NormKind,
    x: &Buffer,
    w: &Buffer,
    stats: &NormStats,
    dy: &Buffer,
    grads: NormGradsOut<'_>,
    rows: usize,
    d: usize,
) -> Result<()> {
    let op = "norm_backward";
    let (r, dd) = check(op, x, w, rows, d)?;
    expect(op, "dy", dy, x.elem(), rows * d)?;
    expect(op, "rstd", &stats.rstd, Elem::F32, rows)?;
    let mean = match (kind, &stats.mean) {
        (NormKind::Layer, Some(m)) => {
            expect(op, "mean", m, Elem::F32, rows)?;
            Some(m)
        }
        (NormKind::Layer, None) => return Err(Error::shape(op, "LayerNorm backward needs the row means")),
        (NormKind::Rms, _) => None,
    };
    if kind == NormKind::Rms && grads.db.is_some() {
        return Err(Error::shape(op, "RMSNorm has no bias"));
    }
    if let Some(dw) = &grads.dw {
        expect(op, "dw", dw, Elem::F32, d)?;
    }
    if let Some(db) = &grads.db {
        expect(op, "db", db, Elem::F32, d)?;
    }
    let sfx = x.elem().suffix();
    if let Some(dx) = grads.dx {
        expect(op, "dx", dx, x.elem(), rows * d)?;
        let kernel = format!("{}_bwd_dx_{sfx}", kind.prefix());
        let dims = Launch::warp_per_row(rows, 4);
        let mut args = vec![KArg::In(x), KArg::In(w)];
        if let Some(m) = mean {
            args.push(KArg::In(m));
        }
        args.extend([KArg::In(&stats.rstd), KArg::In(dy), KArg::Out(dx), KArg::I32(r), KArg::I32(dd)]);
        dev.launch("norm", &kernel, dims, &args)?;
    }
    if (grads.dw.is_none() && grads.db.is_none()) || rows == 0 {
        return Ok(());
    }
    let chunk = chunk_rows(rows);
    let chunks = rows.div_ceil(chunk);
    let mut pw = dev.alloc(Elem::F32, chunks * d)?;
    let mut pb = match grads.db {
        Some(_) => Some(dev.alloc(Elem::F32, chunks * d)?),
        None => None,
    };
    let dims = Launch { grid: [d.div_ceil(128) as u32, chunks as u32, 1], block: [128, 1, 1] };
    let kernel = format!("{}_bwd_params_{sfx}", kind.prefix());
    let mut args = vec![KArg::In(x)];
    if let Some(m) = mean {
        args.push(KArg::In(m));
    }
    args.extend([KArg::In(&stats.rstd), KArg::In(dy), KArg::Out(&mut pw)]);
    if kind == NormKind::Layer {
        args.push(KArg::OptOut(pb.as_mut()));
    }
    args.extend([KArg::I32(r), KArg::I32(dd), KArg::I32(chunk as i32)]);
    dev.launch("norm", &kernel, dims, &args)?;
    if let Some(dw) = grads.dw {
        colsum_accumulate(dev, &pw, chunks, d, dw)?;
    }
    if let (Some(db), Some(pb)) = (grads.db, &pb) {
        colsum_accumulate(dev, pb, chunks, d, db)?;
    }
    Ok(())
}
