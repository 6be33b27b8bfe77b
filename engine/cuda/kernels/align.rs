//! Launcher for kernels/align.cu: masked mean pooling of two hidden-state tensors, the
//! squared-L2 and cosine distance of each pair, and their gradients, in one pass.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::{expect, expect_float, int};
use crate::engine::error::{Error, Result};

/// Which sequences own which rows: packed offsets (`B + 1` values from 0), and an optional
/// 0/1 mask per row (a padded batch: offsets `b * T`).
pub struct Side<'a> {
    pub hidden: &'a Buffer,
    pub offsets: &'a [i32],
    pub mask: Option<&'a [f32]>,
}

/// Per-pair distances.
pub struct AlignOut {
    pub l2: Vec<f32>,
    pub cos: Vec<f32>,
}

pub const MAX_D: usize = 4096;

/// Distances of B pairs; with gradient buffers, also `dh = d(w_l2 * sum l2 + w_cos * sum cos)
/// / dh` for each side (overwritten). Pass `w = lambda / B` for a mean over pairs.
#[allow(clippy::too_many_arguments)]
pub fn align_pairs(
    dev: &Device,
    s: &Side<'_>,
    t: &Side<'_>,
    d: usize,
    w_l2: f32,
    w_cos: f32,
    eps: f32,
    dhs: Option<&mut Buffer>,
    dht: Option<&mut Buffer>,
) -> Result<AlignOut> {
    let op = "align";
    if d == 0 || d > MAX_D {
        return Err(Error::shape(op, format!("hidden size {d}: the kernel pools 1 to {MAX_D} columns")));
    }
    let elem = s.hidden.elem();
    let mut batch = None;
    for (name, side) in [("source", s), ("target", t)] {
        let o = side.offsets;
        if o.first() != Some(&0) || o.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::shape(op, format!("{name} offsets must rise from 0: {o:?}")));
        }
        let rows = *o.last().unwrap() as usize;
        expect_float(op, name, side.hidden, elem, rows * d)?;
        if let Some(m) = side.mask {
            if m.len() != rows {
                return Err(Error::shape(op, format!("{name} mask has {} entries for {rows} rows", m.len())));
            }
        }
        if *batch.get_or_insert(o.len() - 1) != o.len() - 1 {
            return Err(Error::shape(op, "source and target have different numbers of sequences"));
        }
    }
    let batch = batch.unwrap();
    if let Some(g) = &dhs {
        expect(op, "source gradient", g, elem, s.hidden.len())?;
    }
    if let Some(g) = &dht {
        expect(op, "target gradient", g, elem, t.hidden.len())?;
    }
    if batch == 0 {
        return Ok(AlignOut { l2: vec![], cos: vec![] });
    }
    let up = |side: &Side<'_>| -> Result<(Buffer, Option<Buffer>)> {
        Ok((dev.upload(side.offsets, Elem::I32)?, side.mask.map(|m| dev.upload_f32(m, Elem::F32)).transpose()?))
    };
    let (so, sm) = up(s)?;
    let (to, tm) = up(t)?;
    let mut l2 = dev.alloc(Elem::F32, batch)?;
    let mut cos = dev.alloc(Elem::F32, batch)?;
    let k = format!("align_pairs_{}", elem.suffix());
    let args = [
        KArg::In(s.hidden),
        KArg::In(&so),
        KArg::Opt(sm.as_ref()),
        KArg::In(t.hidden),
        KArg::In(&to),
        KArg::Opt(tm.as_ref()),
        KArg::I32(int(op, "d", d)?),
        KArg::F32(w_l2),
        KArg::F32(w_cos),
        KArg::F32(eps),
        KArg::Out(&mut l2),
        KArg::Out(&mut cos),
        KArg::OptOut(dhs),
        KArg::OptOut(dht),
    ];
    dev.launch("align", &k, Launch::linear(batch, 256), &args)?;
    Ok(AlignOut { l2: dev.download_f32(&l2)?, cos: dev.download_f32(&cos)? })
}
