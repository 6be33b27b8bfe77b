//! Launcher for kernels/cross_entropy.cu: softmax cross-entropy fused with its gradient.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::{expect, expect_float, int};
use crate::engine::cpu::cross_entropy::IGNORE_INDEX;
use crate::engine::error::{Error, Result};

/// Per-row losses of `logits [n, c]` against `targets` (host values, `IGNORE_INDEX` skips a
/// row), and, when `dlogits` is given, the gradient of the mean loss times `grad` (the
/// upstream gradient), both in one pass. Returns the mean loss over the counted rows (0 when
/// all are ignored), summed on the host in row order.
pub fn cross_entropy_fused(
    dev: &Device,
    logits: &Buffer,
    targets: &[i64],
    c: usize,
    grad: f32,
    dlogits: Option<&mut Buffer>,
) -> Result<f32> {
    run(dev, Logits::Separate(logits, dlogits), targets, c, grad)
}

/// The same, with the gradient written over the logits (the vocabulary-sized activation is
/// not needed twice).
pub fn cross_entropy_fused_in_place(dev: &Device, logits: &mut Buffer, targets: &[i64], c: usize, grad: f32) -> Result<f32> {
    run(dev, Logits::InPlace(logits), targets, c, grad)
}

enum Logits<'a> {
    Separate(&'a Buffer, Option<&'a mut Buffer>),
    InPlace(&'a mut Buffer),
}

fn run(dev: &Device, bufs: Logits<'_>, targets: &[i64], c: usize, grad: f32) -> Result<f32> {
    let n = targets.len();
    let op = "cross_entropy";
    let logits: &Buffer = match &bufs {
        Logits::Separate(l, _) => l,
        Logits::InPlace(l) => l,
    };
    expect_float(op, "logits", logits, logits.elem(), n * c)?;
    if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| t != IGNORE_INDEX && (t < 0 || t as usize >= c)) {
        return Err(Error::shape(op, format!("target {t} (row {i}) is outside 0..{c}")));
    }
    if let Logits::Separate(_, Some(d)) = &bufs {
        expect(op, "dlogits", d, logits.elem(), n * c)?;
    }
    if n == 0 {
        return Ok(0.0);
    }
    let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let scale = if count == 0 { 0.0 } else { grad / count as f32 };
    let tb = dev.upload(targets, Elem::I64)?;
    let mut loss = dev.alloc(Elem::F32, n)?;
    let k = format!("cross_entropy_fused_{}", logits.elem().suffix());
    let classes = int(op, "classes", c)?;
    let args = match bufs {
        Logits::Separate(l, d) => [KArg::In(l), KArg::In(&tb), KArg::I32(classes), KArg::F32(scale), KArg::Out(&mut loss), KArg::OptOut(d)],
        Logits::InPlace(l) => {
            // The kernel reads and writes the same buffer (its contract allows the alias).
            dev.check_resident(&[l])?;
            let addr = l.addr();
            [KArg::U64(addr), KArg::In(&tb), KArg::I32(classes), KArg::F32(scale), KArg::Out(&mut loss), KArg::Out(l)]
        }
    };
    dev.launch("cross_entropy", &k, Launch::linear(n, 256), &args)?;
    let losses = dev.download_f32(&loss)?;
    let total: f64 = losses.iter().map(|&v| v as f64).sum();
    Ok(if count == 0 { 0.0 } else { (total / count as f64) as f32 })
}
