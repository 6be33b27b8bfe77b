//! Launchers for kernels/attention.cu (scalar path) and kernels/attention_mma.cu (tensor
//! cores): attention with prefix keys over padded or packed sequences, forward and backward.
//!
//! The sizes, options and sequence layout are the CPU backend's ([`AttnDims`], [`SeqLayout`]
//! of engine/cpu/attention), so one description drives both backends. Elements: q, k, v, the
//! prefix, out, dout and dq/dk/dv share one float type; lse and the prefix gradients are f32.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::reduce::colsum_accumulate;
use super::{expect, int};
use crate::engine::cpu::attention::{AttnDims, SeqLayout};
use crate::engine::error::{Error, Result};

/// The kernels' parameter block (kernels/attention_common.cuh, AttnParams).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnParams {
    q: u64,
    k: u64,
    v: u64,
    pk: u64,
    pv: u64,
    q_off: u64,
    k_off: u64,
    key_mask: u64,
    out: u64,
    lse: u64,
    dout: u64,
    delta: u64,
    dq: u64,
    dk: u64,
    dv: u64,
    dpk: u64,
    dpv: u64,
    part_k: u64,
    part_v: u64,
    seed: u64,
    stream: u64,
    scale: f32,
    drop_p: f32,
    batch: i32,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    prefix: i32,
    causal: i32,
    q_rows: i32,
    pad_: i32,
}
const _: () = assert!(std::mem::size_of::<AttnParams>() == 208);

/// A [`SeqLayout`] on a device: per-sequence query and key offsets, and the key mask.
pub struct DeviceLayout {
    pub q_off: Buffer,
    pub k_off: Buffer,
    pub key_mask: Option<Buffer>,
    pub batch: usize,
    pub q_rows: usize,
    pub kv_rows: usize,
    pub max_q: usize,
    pub max_k: usize,
}

impl DeviceLayout {
    pub fn upload(dev: &Device, layout: &SeqLayout) -> Result<DeviceLayout> {
        layout.validate()?;
        let batch = layout.batch();
        let off = |f: &dyn Fn(usize) -> (usize, usize)| -> Result<Vec<i32>> {
            let mut v = vec![0i32];
            for b in 0..batch {
                let (s, n) = f(b);
                v.push(int("attention", "rows", s + n)?);
            }
            Ok(v)
        };
        let qo = off(&|b| layout.q_range(b))?;
        let ko = off(&|b| layout.k_range(b))?;
        let key_mask = match layout {
            SeqLayout::Padded { key_mask: Some(m), .. } => Some(dev.upload_f32(m, Elem::F32)?),
            _ => None,
        };
        let max_q = (0..batch).map(|b| layout.q_range(b).1).max().unwrap_or(0);
        Ok(DeviceLayout {
            q_off: dev.upload(&qo, Elem::I32)?,
            k_off: dev.upload(&ko, Elem::I32)?,
            key_mask,
            batch,
            q_rows: layout.q_rows(),
            kv_rows: layout.kv_rows(),
            max_q,
            max_k: layout.max_keys(),
        })
    }
}

/// Queries, keys, values and the optional prefix keys/values.
pub struct AttnBuffers<'a> {
    pub q: &'a Buffer,
    pub k: &'a Buffer,
    pub v: &'a Buffer,
    pub prefix: Option<(&'a Buffer, &'a Buffer)>,
}

/// Which kernels to run (the tensor-core path: the forward of attention_mma.cu).
pub use super::KernelPath as AttnPath;

/// Checks the operands; returns the element type and the parameter block with the sizes and
/// input addresses filled in.
fn params(op: &'static str, dev: &Device, x: &AttnBuffers<'_>, lay: &DeviceLayout, d: &AttnDims) -> Result<(Elem, AttnParams)> {
    if ![32, 64, 128].contains(&d.head_dim) {
        return Err(Error::shape(op, format!("head dimension {}: the kernels are built for 32, 64 and 128", d.head_dim)));
    }
    if d.heads == 0 || d.kv_heads == 0 || d.heads % d.kv_heads != 0 {
        return Err(Error::shape(op, format!("{} query heads cannot share {} key/value heads", d.heads, d.kv_heads)));
    }
    let elem = x.q.elem();
    let (qw, kvw) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    expect(op, "q", x.q, elem, lay.q_rows * qw)?;
    expect(op, "k", x.k, elem, lay.kv_rows * kvw)?;
    expect(op, "v", x.v, elem, lay.kv_rows * kvw)?;
    let (pk, pv) = match x.prefix {
        Some((pk, pv)) => {
            expect(op, "prefix keys", pk, elem, d.prefix * kvw)?;
            expect(op, "prefix values", pv, elem, d.prefix * kvw)?;
            (pk.addr(), pv.addr())
        }
        None if d.prefix > 0 => return Err(Error::shape(op, "a prefix length without prefix keys and values")),
        None => (0, 0),
    };
    let mut bufs = vec![x.q, x.k, x.v, &lay.q_off, &lay.k_off];
    bufs.extend(x.prefix.map(|p| p.0));
    bufs.extend(x.prefix.map(|p| p.1));
    bufs.extend(lay.key_mask.as_ref());
    dev.check_resident(&bufs)?;
    if lay.batch > 65535 || d.heads > 65535 {
        return Err(Error::shape(op, "more than 65535 sequences or heads in one launch"));
    }
    let (seed, stream, drop_p) = d.dropout.map_or((0, 0, 0.0), |dr| (dr.seed, dr.stream, dr.p));
    let p = AttnParams {
        q: x.q.addr(),
        k: x.k.addr(),
        v: x.v.addr(),
        pk,
        pv,
        q_off: lay.q_off.addr(),
        k_off: lay.k_off.addr(),
        key_mask: lay.key_mask.as_ref().map_or(0, Buffer::addr),
        seed,
        stream,
        scale: d.scale,
        drop_p,
        batch: lay.batch as i32,
        heads: d.heads as i32,
        kv_heads: d.kv_heads as i32,
        head_dim: d.head_dim as i32,
        prefix: int(op, "prefix", d.prefix)?,
        causal: d.causal as i32,
        q_rows: int(op, "query rows", lay.q_rows)?,
        ..Default::default()
    };
    Ok((elem, p))
}

/// Threads per block of every attention kernel but the delta one (ATT_NT in attention.cu, 4
/// warps in attention_mma.cu).
const THREADS: u32 = 128;

/// Block shapes of the scalar kernels (FwdCfg, DqCfg, DkvCfg in attention.cu): queries per
/// forward and dQ block, keys per dK/dV block.
fn fwd_bq(d: usize) -> usize {
    match d {
        32 => 64,
        64 => 32,
        _ => 16,
    }
}
fn dq_bq(d: usize) -> usize {
    fwd_bq(d)
}
fn dkv_bk(d: usize) -> usize {
    fwd_bq(d)
}

/// Whether `path` resolves to the tensor-core kernels here (see [`super::uses_tensor_cores`]).
pub fn uses_tensor_cores(dev: &Device, elem: Elem, path: AttnPath) -> Result<bool> {
    super::uses_tensor_cores("attention", dev, elem, path)
}

/// Queries per block of the tensor-core forward and dQ kernels (MMA_BQ), and their threads (4
/// warps).
const MMA_BQ: usize = 64;

/// Forward: writes `out` (the type of q) and `lse` (f32 `[heads, q_rows]`).
pub fn attention_forward(
    dev: &Device,
    x: &AttnBuffers<'_>,
    lay: &DeviceLayout,
    d: &AttnDims,
    out: &mut Buffer,
    lse: &mut Buffer,
    path: AttnPath,
) -> Result<()> {
    let op = "attention";
    let (elem, mut p) = params(op, dev, x, lay, d)?;
    expect(op, "out", out, elem, lay.q_rows * d.heads * d.head_dim)?;
    expect(op, "lse", lse, Elem::F32, d.heads * lay.q_rows)?;
    if lay.max_q == 0 {
        return Ok(());
    }
    p.out = out.addr();
    p.lse = lse.addr();
    dev.check_resident(&[out, lse])?;
    let (module, kernel, bq, threads) = if uses_tensor_cores(dev, elem, path)? {
        ("attention_mma", format!("attn_fwd_mma_{}_d{}", elem.suffix(), d.head_dim), MMA_BQ, THREADS)
    } else {
        ("attention", format!("attn_fwd_{}_d{}", elem.suffix(), d.head_dim), fwd_bq(d.head_dim), THREADS)
    };
    let dims = Launch { grid: [lay.max_q.div_ceil(bq) as u32, d.heads as u32, lay.batch as u32], block: [threads, 1, 1] };
    dev.launch(module, &kernel, dims, &[KArg::Pod(bytemuck::bytes_of(&p))])
}

/// Gradient outputs: dq, dk, dv (the type of q) are overwritten; dpk, dpv (f32 `[P, kv
/// width]`) accumulate.
#[derive(Default)]
pub struct AttnGradBuffers<'a> {
    pub dq: Option<&'a mut Buffer>,
    pub dk: Option<&'a mut Buffer>,
    pub dv: Option<&'a mut Buffer>,
    pub dpk: Option<&'a mut Buffer>,
    pub dpv: Option<&'a mut Buffer>,
}

/// Backward from the forward's `out` and `lse`. `deterministic`: the prefix gradients are
/// summed over the sequences in order (per-sequence partials, then a fixed-order sum) rather
/// than with atomics. `path` chooses the dQ and dK/dV kernels (attention_mma.cu on the tensor
/// cores: the probabilities and dS rounded to the element type for the products, f32
/// accumulation).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dev: &Device,
    x: &AttnBuffers<'_>,
    lay: &DeviceLayout,
    d: &AttnDims,
    out: &Buffer,
    lse: &Buffer,
    dout: &Buffer,
    g: AttnGradBuffers<'_>,
    deterministic: bool,
    path: AttnPath,
) -> Result<()> {
    let op = "attention_backward";
    let (elem, mut p) = params(op, dev, x, lay, d)?;
    let mma = super::uses_tensor_cores(op, dev, elem, path)?;
    let (qw, kvw) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    expect(op, "out", out, elem, lay.q_rows * qw)?;
    expect(op, "dout", dout, elem, lay.q_rows * qw)?;
    expect(op, "lse", lse, Elem::F32, d.heads * lay.q_rows)?;
    for (what, b, len) in [("dq", &g.dq, lay.q_rows * qw), ("dk", &g.dk, lay.kv_rows * kvw), ("dv", &g.dv, lay.kv_rows * kvw)] {
        if let Some(b) = b {
            expect(op, what, b, elem, len)?;
        }
    }
    for (what, b) in [("dpk", &g.dpk), ("dpv", &g.dpv)] {
        if let Some(b) = b {
            if d.prefix == 0 {
                return Err(Error::shape(op, format!("{what} asked for without prefix keys")));
            }
            expect(op, what, b, Elem::F32, d.prefix * kvw)?;
        }
    }
    dev.check_resident(&[out, lse, dout])?;
    if lay.batch == 0 {
        return Ok(());
    }
    let delta = dev.alloc(Elem::F32, d.heads * lay.q_rows)?;
    p.out = out.addr();
    p.lse = lse.addr();
    p.dout = dout.addr();
    p.delta = delta.addr();
    let sfx = elem.suffix();
    let hd = d.head_dim;
    if lay.q_rows > 0 {
        // delta is written here and read by the kernels below (one stream, in order).
        let dims = Launch::cover(lay.q_rows * d.heads, 256);
        dev.launch("attention", &format!("attn_bwd_delta_{sfx}"), dims, &[KArg::Pod(bytemuck::bytes_of(&p))])?;
    }
    if let Some(dq) = g.dq {
        dev.check_resident(&[dq])?;
        p.dq = dq.addr();
        if lay.max_q > 0 {
            let (module, kernel, bq) = if mma {
                ("attention_mma", format!("attn_bwd_dq_mma_{sfx}_d{hd}"), MMA_BQ)
            } else {
                ("attention", format!("attn_bwd_dq_{sfx}_d{hd}"), dq_bq(hd))
            };
            let dims = Launch { grid: [lay.max_q.div_ceil(bq) as u32, d.heads as u32, lay.batch as u32], block: [THREADS, 1, 1] };
            dev.launch(module, &kernel, dims, &[KArg::Pod(bytemuck::bytes_of(&p))])?;
        }
        p.dq = 0;
    }
    let want_k = g.dk.is_some() || g.dpk.is_some();
    let want_v = g.dv.is_some() || g.dpv.is_some();
    if !want_k && !want_v {
        return Ok(());
    }
    for b in [&g.dk, &g.dv].into_iter().flatten() {
        dev.check_resident(&[b])?;
    }
    p.dk = g.dk.as_ref().map_or(0, |b| b.addr());
    p.dv = g.dv.as_ref().map_or(0, |b| b.addr());
    p.dpk = g.dpk.as_ref().map_or(0, |b| b.addr());
    p.dpv = g.dpv.as_ref().map_or(0, |b| b.addr());
    let part_len = lay.batch * d.prefix * kvw;
    let mut part_k = match (&g.dpk, deterministic) {
        (Some(_), true) => Some(dev.alloc(Elem::F32, part_len)?),
        _ => None,
    };
    let mut part_v = match (&g.dpv, deterministic) {
        (Some(_), true) => Some(dev.alloc(Elem::F32, part_len)?),
        _ => None,
    };
    p.part_k = part_k.as_ref().map_or(0, Buffer::addr);
    p.part_v = part_v.as_ref().map_or(0, Buffer::addr);
    let l_max = d.prefix + lay.max_k;
    if l_max > 0 {
        let (module, kernel, bk) = if mma {
            // 64 keys per block, 32 for D = 128 (DSPLIT in attention_mma.cu).
            ("attention_mma", format!("attn_bwd_dkdv_mma_{sfx}_d{hd}"), if hd == 128 { 32 } else { 64 })
        } else {
            ("attention", format!("attn_bwd_dkdv_{sfx}_d{hd}"), dkv_bk(hd))
        };
        let dims = Launch { grid: [l_max.div_ceil(bk) as u32, d.kv_heads as u32, lay.batch as u32], block: [THREADS, 1, 1] };
        dev.launch(module, &kernel, dims, &[KArg::Pod(bytemuck::bytes_of(&p))])?;
    }
    let n = d.prefix * kvw;
    if let (Some(dpk), Some(part)) = (g.dpk, part_k.as_mut()) {
        colsum_accumulate(dev, part, lay.batch, n, dpk)?;
    }
    if let (Some(dpv), Some(part)) = (g.dpv, part_v.as_mut()) {
        colsum_accumulate(dev, part, lay.batch, n, dpv)?;
    }
    Ok(())
}
