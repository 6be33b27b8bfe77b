//! Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_.
//!
//! The norm is taken over every gradient buffer of the store (trainable parameters only: frozen
//! ones have none), as if they were one vector. Squares are summed in f64 in a fixed order:
//! parameters in store order, each split into chunks of [`NORM_CHUNK`] elements summed in
//! parallel, the partial sums added in order. The chunking does not depend on the thread count,
//! so neither does the norm. torch sums in f32 (per-tensor norms, then the norm of those), so its
//! norm can differ from this one in the last bits of f32; this one is the f32 nearest the exact
//! norm in all but the rarest cases.
//!
//! The scale is computed as torch computes it, in f32: `coef = (1 / (norm + 1e-6)) * max_norm`
//! (torch evaluates `max_norm / tensor` as `tensor.reciprocal() * max_norm`), clamped to at most
//! 1, and every gradient is multiplied by it when it is below 1. A NaN or infinite norm makes a
//! NaN or 0 scale, as in torch (`error_if_nonfinite=False`): the training loop should check the
//! returned norm and skip the step when it is not finite.

use rayon::prelude::*;

use crate::engine::autograd::{ParamId, ParamStore};

/// Elements per parallel unit of the norm.
pub const NORM_CHUNK: usize = 1 << 14;

/// The global L2 norm of all gradients, rounded to f32 (0 when there are none).
pub fn grad_norm(store: &ParamStore) -> f32 {
    grad_sq_sum(store).sqrt() as f32
}

/// Scales every gradient so that their global norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(store: &mut ParamStore, max_norm: f32) -> f32 {
    let norm = grad_norm(store);
    let coef = clip_coefficient(norm, max_norm);
    // Multiplying by exactly 1 changes nothing; NaN != 1 scales (to NaN), as torch does.
    if coef != 1.0 {
        for id in grad_ids(store) {
            if let Some(g) = store.grad_mut(id) {
                scale(g, coef);
            }
        }
    }
    norm
}

/// torch's `clamp(max_norm / (norm + 1e-6), max=1)` in f32, the division done as a reciprocal
/// and a product.
pub fn clip_coefficient(norm: f32, max_norm: f32) -> f32 {
    let coef = (1.0f32 / (norm + 1e-6f32)) * max_norm;
    if coef.is_nan() {
        coef
    } else {
        coef.min(1.0)
    }
}

fn grad_ids(store: &ParamStore) -> Vec<ParamId> {
    store.trainable_ids().filter(|&id| store.grad(id).is_some()).collect()
}

fn grad_sq_sum(store: &ParamStore) -> f64 {
    let chunks: Vec<&[f32]> = grad_ids(store)
        .into_iter()
        .filter_map(|id| store.grad(id))
        .flat_map(|g| g.f32s().chunks(NORM_CHUNK))
        .collect();
    let partials: Vec<f64> = chunks
        .par_iter()
        .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .collect();
    partials.iter().sum()
}

fn scale(g: &mut [f32], coef: f32) {
    g.par_chunks_mut(NORM_CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x *= coef));
}
