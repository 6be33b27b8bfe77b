//! Cross-entropy over the rows of each segment (extractive QA's start/end loss); see
//! [`crate::engine::cpu::segment_ce`]. A scalar of shape `[]`.
//!
//! What backward keeps: the logits (shared with their forward value) and one log-sum-exp per
//! (segment, column); offsets and targets as plain vectors.

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::segment_ce as k;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

/// `logits`: `[rows, c]`; `offsets`: `batch + 1` cumulative row offsets; `targets`:
/// `batch * c` local rows (or `None`).
pub fn segment_cross_entropy(tape: &mut Tape, logits: &Var, offsets: &[usize], targets: &[Option<usize>]) -> Result<Var> {
    let bad = |msg: String| Err(Error::shape("segment_cross_entropy", msg));
    let [n, c] = *logits.shape() else { return bad(format!("logits must be [rows, columns], found {:?}", logits.shape())) };
    if offsets.first() != Some(&0) || offsets.last() != Some(&n) || offsets.windows(2).any(|w| w[1] < w[0]) {
        return bad(format!("offsets must go from 0 to {n} without decreasing: {offsets:?}"));
    }
    let b = offsets.len() - 1;
    if targets.len() != b * c {
        return bad(format!("{} targets for {b} segments x {c} columns", targets.len()));
    }
    for (i, t) in targets.iter().enumerate() {
        let len = offsets[i / c + 1] - offsets[i / c];
        if let Some(t) = *t {
            if t >= len {
                return bad(format!("target row {t} of segment {} is out of range for its {len} rows", i / c));
            }
        }
    }
    let lv = logits.value().to_f32_cow();
    let (loss, lse, count) = k::segment_ce(&lv, c, offsets, targets);
    Ok(tape.record(Tensor::scalar(loss), &[logits], |_| {
        Box::new(SegmentCeBackward {
            logits: logits.save(),
            lse: Saved::activation(Tensor::new(lse, &[b * c])),
            offsets: offsets.to_vec(),
            targets: targets.to_vec(),
            count,
            c,
        })
    }))
}

struct SegmentCeBackward {
    logits: Saved,
    lse: Saved,
    offsets: Vec<usize>,
    targets: Vec<Option<usize>>,
    count: usize,
    c: usize,
}

impl Backward for SegmentCeBackward {
    fn name(&self) -> &'static str {
        "segment_cross_entropy"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let lv = self.logits.tensor.to_f32_cow();
        let mut d = vec![0.0f32; lv.len()];
        k::segment_ce_backward(&lv, self.c, &self.offsets, &self.targets, self.lse.tensor.f32s(), self.count, g.f32s()[0], &mut d);
        Ok(vec![Some(Tensor::new(d, self.logits.tensor.shape()))])
    }

    fn saved(&self) -> Vec<&Saved> {
        vec![&self.logits, &self.lse]
    }
}
