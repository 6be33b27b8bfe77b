//! Launchers for kernels/lora.cu (scalar path) and kernels/lora_mma.cu (tensor cores): a frozen
//! linear layer with a LoRA update, fused, forward and backward (the CPU counterpart is
//! models/peft/lora.rs on top of `ops::linear`).
//!
//! Types: x, y, dy, dx and the frozen weight W share one float type; the LoRA matrices A
//! `[r, din]` and B `[dout, r]`, the bias `[dout]`, the saved projection h `[tokens, r]` and the
//! gradients dA, dB are f32. y and dx are overwritten, dA and dB accumulate; W gets no
//! gradient (there is no output for one). At rank 0 (A and B empty) the kernels are the frozen
//! linear layer alone, `y = x W^T + b` and `dx = dy W`: the frozen products of a training step
//! on the device (models/bert_cuda).

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::reduce::{chunk_rows, colsum_accumulate};
use super::{expect, expect_float, int, uses_tensor_cores, KernelPath};
use crate::engine::error::{Error, Result};

/// The kernels' parameter block (kernels/lora.cu, LoraParams).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LoraParams {
    input: u64,
    w: u64,
    bias: u64,
    u_mat: u64,
    v_mat: u64,
    out: u64,
    u_out: u64,
    seed: u64,
    stream: u64,
    scale: f32,
    drop_p: f32,
    drop_scale: f32,
    n: i32,
    din: i32,
    dout: i32,
    r: i32,
    pad_: i32,
}
const _: () = assert!(std::mem::size_of::<LoraParams>() == 104);

/// Output tile of the fused kernels (LORA_BM x LORA_BN) and threads per block.
const TILE: usize = 64;
const THREADS: u32 = 128;

/// Sizes of one adapted projection applied to `tokens` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraDims {
    pub tokens: usize,
    pub din: usize,
    pub dout: usize,
    pub r: usize,
}

/// Dropout on the LoRA branch's input, with the CPU's mask (engine/cpu/dropout.rs): element
/// `i` of x is kept when `rng::uniform(seed, stream, i) >= p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraDropout {
    pub p: f32,
    pub seed: u64,
    pub stream: u64,
}

/// The layer: the frozen weight (and bias) and the trainable low-rank pair (empty buffers with
/// `r = 0`: the frozen layer alone).
pub struct LoraLayer<'a> {
    /// `[dout, din]`, the type of x.
    pub w: &'a Buffer,
    /// f32 `[dout]`.
    pub bias: Option<&'a Buffer>,
    /// f32 `[r, din]`.
    pub a: &'a Buffer,
    /// f32 `[dout, r]`.
    pub b: &'a Buffer,
    /// `alpha / r` (or `alpha / sqrt(r)`): models/peft/lora.rs `Lora::scale`.
    pub scale: f32,
    /// `None` in evaluation, or with p = 0.
    pub dropout: Option<LoraDropout>,
}

/// Gradient outputs: dx (the type of x) is overwritten; da, db (f32) accumulate.
#[derive(Default)]
pub struct LoraGrads<'a> {
    pub dx: Option<&'a mut Buffer>,
    pub da: Option<&'a mut Buffer>,
    pub db: Option<&'a mut Buffer>,
}

/// The rank the kernels are instantiated for (R in lora.cu): r rounded up to 16 or 64. Rank 0
/// is a plain frozen linear layer (`y = x W^T + b`, `dx = dy W`), an instance of its own that
/// computes no projection.
fn rank_bucket(op: &'static str, r: usize) -> Result<usize> {
    match r {
        0 => Ok(0),
        1..=16 => Ok(16),
        17..=64 => Ok(64),
        _ => Err(Error::shape(op, format!("rank {r}: the kernels take ranks 0 (no LoRA) to 64"))),
    }
}

/// Checks the layer's operands against `d` and `x`; returns the element type and the
/// parameter block with sizes, scale and dropout filled in.
fn params(op: &'static str, dev: &Device, layer: &LoraLayer<'_>, d: &LoraDims, x: &Buffer) -> Result<(Elem, LoraParams)> {
    rank_bucket(op, d.r)?;
    if d.din == 0 || d.dout == 0 {
        return Err(Error::shape(op, format!("a {} x {} weight", d.dout, d.din)));
    }
    let elem = x.elem();
    expect_float(op, "x", x, elem, d.tokens * d.din)?;
    expect(op, "frozen weight", layer.w, elem, d.dout * d.din)?;
    expect(op, "lora A", layer.a, Elem::F32, d.r * d.din)?;
    expect(op, "lora B", layer.b, Elem::F32, d.dout * d.r)?;
    if let Some(b) = layer.bias {
        expect(op, "bias", b, Elem::F32, d.dout)?;
    }
    let mut bufs = vec![x, layer.w, layer.a, layer.b];
    bufs.extend(layer.bias);
    dev.check_resident(&bufs)?;
    if d.tokens.div_ceil(TILE) > 65535 {
        return Err(Error::shape(op, format!("{} tokens in one launch (at most {})", d.tokens, 65535 * TILE)));
    }
    let (drop_p, seed, stream) = match layer.dropout {
        Some(dr) if dr.p > 0.0 => {
            if !(0.0..1.0).contains(&dr.p) {
                return Err(Error::shape(op, format!("dropout probability {} is not in [0, 1)", dr.p)));
            }
            (dr.p, dr.seed, dr.stream)
        }
        _ => (0.0, 0, 0),
    };
    let p = LoraParams {
        seed,
        stream,
        scale: layer.scale,
        drop_p,
        // engine/cpu/dropout.rs rounds the factor from f64.
        drop_scale: (1.0 / (1.0 - drop_p as f64)) as f32,
        n: int(op, "tokens", d.tokens)?,
        din: int(op, "din", d.din)?,
        dout: int(op, "dout", d.dout)?,
        r: int(op, "rank", d.r)?,
        ..Default::default()
    };
    Ok((elem, p))
}

/// A fused kernel (`fwd` or `bwd`) for the rank bucket, on the path asked for.
struct Fused {
    module: &'static str,
    kernel: String,
}

impl Fused {
    fn new(op: &'static str, dev: &Device, elem: Elem, r: usize, path: KernelPath, dir: &str) -> Result<Fused> {
        let (sfx, rb) = (elem.suffix(), rank_bucket(op, r)?);
        Ok(if uses_tensor_cores(op, dev, elem, path)? {
            Fused { module: "lora_mma", kernel: format!("lora_{dir}_mma_{sfx}_r{rb}") }
        } else {
            Fused { module: "lora", kernel: format!("lora_{dir}_{sfx}_r{rb}") }
        })
    }

    /// One launch: `n_cols` output columns (grid x; 1 when only the projection is wanted).
    /// Both paths tile the output 64 x 64 with 128 threads.
    fn launch(&self, dev: &Device, p: &LoraParams, tokens: usize, n_cols: usize) -> Result<()> {
        let grid_x = if p.out == 0 { 1 } else { n_cols.div_ceil(TILE) };
        let dims = Launch { grid: [grid_x as u32, tokens.div_ceil(TILE) as u32, 1], block: [THREADS, 1, 1] };
        dev.launch(self.module, &self.kernel, dims, &[KArg::Pod(bytemuck::bytes_of(p))])
    }
}

/// Forward: `y = x W^T + b + s * h B^T` with `h = drop(x) A^T`, written into `h` when given
/// (f32 `[tokens, r]`, what the backward needs for dB; without it the backward recomputes it).
/// On the tensor-core path the LoRA matrices and h are rounded to the element type for the
/// products (as a bf16 autocast does), the accumulation stays f32.
pub fn lora_forward(
    dev: &Device,
    layer: &LoraLayer<'_>,
    d: &LoraDims,
    x: &Buffer,
    y: &mut Buffer,
    h: Option<&mut Buffer>,
    path: KernelPath,
) -> Result<()> {
    let op = "lora_forward";
    let (elem, mut p) = params(op, dev, layer, d, x)?;
    let fused = Fused::new(op, dev, elem, d.r, path, "fwd")?;
    expect(op, "y", y, elem, d.tokens * d.dout)?;
    if let Some(h) = &h {
        expect(op, "h", h, Elem::F32, d.tokens * d.r)?;
        dev.check_resident(&[h])?;
    }
    dev.check_resident(&[y])?;
    if d.tokens == 0 {
        return Ok(());
    }
    p.input = x.addr();
    p.w = layer.w.addr();
    p.bias = layer.bias.map_or(0, Buffer::addr);
    p.u_mat = layer.a.addr();
    p.v_mat = layer.b.addr();
    p.out = y.addr();
    p.u_out = h.map_or(0, |h| h.addr());
    fused.launch(dev, &p, d.tokens, d.dout)
}

/// Backward from `dy` (`[tokens, dout]`, the type of x): `dx = dy W + s * drop(g A)` with
/// `g = dy B`; `da += s * g^T drop(x)`; `db += s * dy^T h`. `h` is the forward's projection,
/// or `None` to recompute it (only needed for db). `path` chooses the fused kernels (dx, g, and
/// h when recomputed); dA and dB are sums over tokens, always the scalar kernels.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(
    dev: &Device,
    layer: &LoraLayer<'_>,
    d: &LoraDims,
    x: &Buffer,
    h: Option<&Buffer>,
    dy: &Buffer,
    grads: LoraGrads<'_>,
    path: KernelPath,
) -> Result<()> {
    let op = "lora_backward";
    let (elem, p) = params(op, dev, layer, d, x)?;
    let rb = rank_bucket(op, d.r)?;
    let (fwd, bwd) = (Fused::new(op, dev, elem, d.r, path, "fwd")?, Fused::new(op, dev, elem, d.r, path, "bwd")?);
    let sfx = elem.suffix();
    expect(op, "dy", dy, elem, d.tokens * d.dout)?;
    dev.check_resident(&[dy])?;
    if let Some(h) = h {
        expect(op, "h", h, Elem::F32, d.tokens * d.r)?;
        dev.check_resident(&[h])?;
    }
    if let Some(dx) = &grads.dx {
        expect(op, "dx", dx, elem, d.tokens * d.din)?;
        dev.check_resident(&[dx])?;
    }
    if let Some(da) = &grads.da {
        expect(op, "dA", da, Elem::F32, d.r * d.din)?;
        dev.check_resident(&[da])?;
    }
    if let Some(db) = &grads.db {
        expect(op, "dB", db, Elem::F32, d.dout * d.r)?;
        dev.check_resident(&[db])?;
    }
    if d.r == 0 && (grads.da.is_some() || grads.db.is_some()) {
        return Err(Error::shape(op, "dA or dB asked for at rank 0 (a frozen layer without LoRA)"));
    }
    if d.tokens == 0 {
        return Ok(()); // nothing to add to dA, dB; dx is empty
    }
    // dx and g = dy B in one pass over dy (g only when dA is wanted).
    let mut g_buf = None;
    if grads.dx.is_some() || grads.da.is_some() {
        let g = grads.da.is_some().then(|| dev.alloc(Elem::F32, d.tokens * d.r)).transpose()?;
        let mut pb = p;
        pb.input = dy.addr();
        pb.w = layer.w.addr();
        pb.u_mat = layer.b.addr();
        pb.v_mat = layer.a.addr();
        pb.out = grads.dx.as_ref().map_or(0, |b| b.addr());
        pb.u_out = g.as_ref().map_or(0, Buffer::addr);
        bwd.launch(dev, &pb, d.tokens, d.din)?;
        g_buf = g;
    }
    let chunk = chunk_rows(d.tokens);
    let chunks = d.tokens.div_ceil(chunk);
    // One parameter gradient: partials per chunk of tokens, summed in chunk order into `out`.
    let grad = |kernel: &str, src: &Buffer, cols: usize, rank: &Buffer, out: &mut Buffer| -> Result<()> {
        let n = d.r * cols;
        let mut partial = dev.alloc(Elem::F32, chunks * n)?;
        let args = [
            KArg::In(src),
            KArg::I32(int(op, "columns", cols)?),
            KArg::In(rank),
            KArg::I32(p.n),
            KArg::I32(p.r),
            KArg::I32(int(op, "rows per chunk", chunk)?),
            KArg::U64(p.seed),
            KArg::U64(p.stream),
            KArg::F32(p.drop_p),
            KArg::F32(p.drop_scale),
            KArg::F32(p.scale),
            KArg::Out(&mut partial),
        ];
        let dims = Launch { grid: [cols.div_ceil(THREADS as usize) as u32, chunks as u32, 1], block: [THREADS, 1, 1] };
        dev.launch("lora", kernel, dims, &args)?;
        colsum_accumulate(dev, &partial, chunks, n, out)
    };
    if let (Some(da), Some(g)) = (grads.da, g_buf.as_ref()) {
        grad(&format!("lora_grad_a_{sfx}_r{rb}"), x, d.din, g, da)?;
    }
    if let Some(db) = grads.db {
        let recomputed;
        let h = match h {
            Some(h) => h,
            None => {
                // The forward's projection alone (no output: one column block).
                recomputed = dev.alloc(Elem::F32, d.tokens * d.r)?;
                let mut pf = p;
                pf.input = x.addr();
                pf.u_mat = layer.a.addr();
                pf.u_out = recomputed.addr();
                fwd.launch(dev, &pf, d.tokens, d.dout)?;
                &recomputed
            }
        };
        grad(&format!("lora_grad_b_{sfx}_r{rb}"), dy, d.dout, h, db)?;
    }
    Ok(())
}
