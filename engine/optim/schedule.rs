//! Learning-rate schedules: linear warm-up, then constant, linear or cosine decay.
//!
//! The multipliers are those of transformers' `get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` (num_cycles 0.5) and
//! `get_cosine_with_min_lr_schedule_with_warmup` (min_lr_rate), written from their source and
//! evaluated in f64 in the same order, so they agree to the bit (tests/optim/schedule.rs).
//!
//! Step numbering is a transformers training loop's: the update number `k` (0 for the first)
//! uses `lr_at(base_lr, k)`, so with warm-up the first update has learning rate 0. Past
//! `total_steps` the linear decay stays at 0 (or the floor) and the cosine multiplier rises
//! again, as transformers' does: a loop stops at `total_steps`.

use crate::engine::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// Constant after warm-up (`min_lr_ratio` unused).
    Constant,
    /// Linear from 1 at the end of warm-up to `min_lr_ratio` at `total_steps`.
    Linear,
    /// Half a cosine from 1 at the end of warm-up to `min_lr_ratio` at `total_steps`.
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
    /// The floor of the decay as a fraction of the peak (transformers' `min_lr_rate`); 0 for
    /// the plain linear and cosine schedules.
    pub min_lr_ratio: f64,
}

impl Schedule {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::Usage(format!("schedule: min_lr_ratio must be in [0, 1], got {}", self.min_lr_ratio)));
        }
        if self.warmup_steps > self.total_steps && self.decay != Decay::Constant {
            return Err(Error::Usage(format!(
                "schedule: {} warm-up steps exceed the {} steps of the run",
                self.warmup_steps, self.total_steps
            )));
        }
        Ok(())
    }

    /// The learning rate of update number `step` (0 for the first): `base_lr * factor(step)`,
    /// as torch's LambdaLR computes it.
    pub fn lr_at(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }

    /// The multiplier of the peak learning rate at update number `step` (the LambdaLR lambda).
    pub fn factor(&self, step: u64) -> f64 {
        let (s, w, t) = (step as i128, self.warmup_steps as i128, self.total_steps as i128);
        if s < w {
            // float(current_step) / float(max(1, num_warmup_steps))
            return s as f64 / w.max(1) as f64;
        }
        let r = self.min_lr_ratio;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => {
                // max(0.0, float(num_training_steps - current_step) / float(max(1, T - W)))
                let f = py_max0((t - s) as f64 / (t - w).max(1) as f64);
                // The floor, applied as transformers applies it to the cosine (exact for r = 0).
                f * (1.0 - r) + r
            }
            Decay::Cosine => {
                let progress = (s - w) as f64 / (t - w).max(1) as f64;
                // math.pi * float(num_cycles) * 2.0 * progress, num_cycles = 0.5
                let f = 0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos());
                py_max0(f * (1.0 - r) + r)
            }
        }
    }
}

/// Python's `max(0, x)`: 0 unless `x > 0` (so -0.0 and NaN give 0).
fn py_max0(x: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}
