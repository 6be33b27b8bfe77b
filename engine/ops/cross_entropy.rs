//! Cross-entropy loss of `logits: [n, c]` against `targets: [n]` (i64; [`IGNORE_INDEX`] = -100
//! skips a row), mean over counted rows, 0 when none counts; a scalar of shape `[]`. See
//! [`crate::engine::cpu::cross_entropy`].
//!
//! What backward keeps: the logits (shared with their forward value) and two numbers per row
//! (maximum and log of the shifted sum, `2 n` f32); the targets as a plain vector.

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::cross_entropy as k;
pub use crate::engine::cpu::cross_entropy::IGNORE_INDEX;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

pub fn cross_entropy(tape: &mut Tape, logits: &Var, targets: &[i64]) -> Result<Var> {
    let [n, c] = *logits.shape() else {
        return Err(Error::shape("cross_entropy", format!("logits must be [rows, classes], found {:?}", logits.shape())));
    };
    if targets.len() != n {
        return Err(Error::shape("cross_entropy", format!("{} targets for {n} rows of logits", targets.len())));
    }
    if let Some((row, &t)) = targets.iter().enumerate().find(|&(_, &t)| t != IGNORE_INDEX && (t < 0 || t >= c as i64)) {
        return Err(Error::shape(
            "cross_entropy",
            format!("target {t} (row {row}) is out of range for {c} classes (ignore index is {IGNORE_INDEX})"),
        ));
    }
    let lv = logits.value().to_f32_cow();
    let ce = k::cross_entropy(&lv, targets, c);
    let value = Tensor::scalar(ce.loss);
    Ok(tape.record(value, &[logits], |_| {
        Box::new(CrossEntropyBackward {
            logits: logits.save(),
            max: Saved::activation(Tensor::new(ce.max, &[n])),
            log_sum: Saved::activation(Tensor::new(ce.log_sum, &[n])),
            targets: targets.to_vec(),
            count: ce.count,
            c,
        })
    }))
}

struct CrossEntropyBackward {
    logits: Saved,
    max: Saved,
    log_sum: Saved,
    targets: Vec<i64>,
    count: usize,
    c: usize,
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let gs = g.to_f32_cow().first().copied().unwrap_or(0.0);
        let logits = self.logits.tensor.to_f32_cow();
        let (max, log_sum) = (self.max.tensor.to_f32_cow(), self.log_sum.tensor.to_f32_cow());
        let mut d = vec![0.0f32; logits.len()];
        k::cross_entropy_backward(&logits, &max, &log_sum, &self.targets, self.count, self.c, gs, &mut d);
        Ok(vec![Some(Tensor::new(d, self.logits.tensor.shape()))])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.logits, &self.max, &self.log_sum]
    }
}
