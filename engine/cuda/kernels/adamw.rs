//! Launcher for kernels/adamw.cu: one AdamW step over many tensors in one launch.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::expect;
use crate::engine::error::{Error, Result};

/// AdamW hyperparameters (torch.optim.AdamW's names and defaults).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> AdamW {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// One parameter tensor's buffers (all f32, same length).
pub struct AdamSlot<'a> {
    pub param: &'a mut Buffer,
    pub grad: &'a Buffer,
    pub m: &'a mut Buffer,
    pub v: &'a mut Buffer,
}

const BLOCK_ELEMS: usize = 256 * 4; // threads x ADAM_ITEMS

/// Step `step` (1-based, as torch's `state['step']` after its increment) over every slot,
/// with the gradients multiplied by `grad_scale` first.
pub fn adamw_step(dev: &Device, h: &AdamW, step: u64, grad_scale: f32, slots: &mut [AdamSlot<'_>]) -> Result<()> {
    let op = "adamw";
    if step == 0 {
        return Err(Error::shape(op, "steps count from 1"));
    }
    // The descriptor table: p, g, m, v addresses, length, first block (6 x 8 bytes, repr C).
    let mut table: Vec<u64> = Vec::with_capacity(slots.len() * 6);
    let mut blocks = 0usize;
    for (i, s) in slots.iter().enumerate() {
        let n = s.param.len();
        for (what, b) in [("param", &*s.param), ("grad", s.grad), ("m", &*s.m), ("v", &*s.v)] {
            expect(op, &format!("tensor {i} {what}"), b, Elem::F32, n)?;
        }
        if n == 0 {
            continue;
        }
        table.extend([s.param.addr(), s.grad.addr(), s.m.addr(), s.v.addr(), n as u64, blocks as u64]);
        blocks += n.div_ceil(BLOCK_ELEMS);
    }
    if blocks == 0 {
        return Ok(());
    }
    let count = table.len() / 6;
    let tb = dev.upload(&table, Elem::I64)?;
    // torch computes these in Python floats (f64) and rounds them once.
    let bc1 = 1.0 - (h.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(step as i32);
    let step_size = (h.lr as f64 / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    // The kernel reaches p, g, m and v through the table, not as arguments: check them here.
    for s in slots.iter() {
        dev.check_resident(&[&*s.param, s.grad, &*s.m, &*s.v])?;
    }
    let args = [
        KArg::In(&tb),
        KArg::I32(count as i32),
        KArg::F32(h.lr),
        KArg::F32(h.beta1),
        KArg::F32(h.beta2),
        KArg::F32(h.eps),
        KArg::F32(h.weight_decay),
        KArg::F32(step_size),
        KArg::F32(bc2_sqrt),
        KArg::F32(grad_scale),
    ];
    dev.launch("adamw", "adamw_f32", Launch::linear(blocks, 256), &args)
}
