//! AdamW's state as named f32 tensors, for checkpoints that resume bit for bit.
//!
//! Names (`<param>` is the parameter's name in the store):
//! - `optim.m.<param>`, `optim.v.<param>`: first and second moments, the parameter's shape;
//! - `optim.step.<param>`: the parameter's update count, a count tensor (below);
//! - `optim.updates`: the number of `step` calls, a count tensor.
//!
//! A trainable parameter that has been seen without a gradient and never updated has a step
//! entry of 0 and no moments, so that loading can tell it from a parameter the checkpoint lacks.
//!
//! Counts are stored exactly in f32: a count tensor has shape `[2]` and holds `[n >> 24,
//! n & 0xFFFFFF]`, two integers below 2^24, each exact in f32 (n < 2^48). Moments are copied as
//! they are, so save and load change no bit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::engine::autograd::ParamStore;
use crate::engine::error::{Error, Result};
use crate::engine::optim::adamw::{AdamW, ParamState};
use crate::engine::tensor::{DType, Tensor};

pub const STATE_PREFIX: &str = "optim.";
const M_PREFIX: &str = "optim.m.";
const V_PREFIX: &str = "optim.v.";
const STEP_PREFIX: &str = "optim.step.";
const UPDATES: &str = "optim.updates";

const COUNT_LIMB: u64 = 1 << 24;

/// A count as an exact f32 tensor `[n >> 24, n & 0xFFFFFF]`.
pub fn count_tensor(n: u64) -> Tensor {
    assert!(n < COUNT_LIMB * COUNT_LIMB, "count {n} does not fit in two 24-bit limbs");
    Tensor::new(vec![(n / COUNT_LIMB) as f32, (n % COUNT_LIMB) as f32], &[2])
}

/// Reads a count tensor; `None` unless it is `[2]` of integers in `[0, 2^24)`.
pub fn read_count(t: &Tensor) -> Option<u64> {
    if t.shape() != [2] {
        return None;
    }
    let v = t.to_f32_cow();
    let limb = |x: f32| (x >= 0.0 && x < COUNT_LIMB as f32 && x.fract() == 0.0).then_some(x as u64);
    Some(limb(v[0])? * COUNT_LIMB + limb(v[1])?)
}

/// The tensors of one parameter's entry while loading.
#[derive(Default)]
struct Entry<'a> {
    m: Option<&'a Tensor>,
    v: Option<&'a Tensor>,
    step: Option<&'a Tensor>,
}

impl AdamW {
    /// The whole state, in name order (see the module documentation for the names).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(UPDATES.to_string(), count_tensor(self.updates))];
        for (name, s) in &self.states {
            out.push((format!("{M_PREFIX}{name}"), Tensor::new(s.m.clone(), &s.shape)));
            out.push((format!("{V_PREFIX}{name}"), Tensor::new(s.v.clone(), &s.shape)));
            out.push((format!("{STEP_PREFIX}{name}"), count_tensor(s.step)));
        }
        for name in &self.idle {
            out.push((format!("{STEP_PREFIX}{name}"), count_tensor(0)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Replaces the state with the one in `tensors` (read from the checkpoint `source`, which
    /// errors name). Tensors whose names do not start with `optim.` are ignored, so a checkpoint
    /// may hold the trainable parameters too. Every `optim.` tensor must belong to a trainable
    /// parameter of `store` with the right shape, and every trainable parameter must have an
    /// entry once the optimiser has stepped. On error the state is left as it was.
    pub fn load_state(&mut self, store: &ParamStore, tensors: &[(String, Tensor)], source: &Path) -> Result<()> {
        let bad = |name: &str, msg: String| Error::tensor(source, name, msg);
        let mut updates = None;
        let mut entries: BTreeMap<&str, Entry> = BTreeMap::new();
        for (name, t) in tensors {
            if !name.starts_with(STATE_PREFIX) {
                continue;
            }
            let slot = if name == UPDATES {
                &mut updates
            } else if let Some(p) = name.strip_prefix(M_PREFIX) {
                &mut entries.entry(p).or_default().m
            } else if let Some(p) = name.strip_prefix(V_PREFIX) {
                &mut entries.entry(p).or_default().v
            } else if let Some(p) = name.strip_prefix(STEP_PREFIX) {
                &mut entries.entry(p).or_default().step
            } else {
                return Err(bad(name, "not an AdamW state tensor (expected optim.m., optim.v., optim.step. or optim.updates)".into()));
            };
            if slot.replace(t).is_some() {
                return Err(bad(name, "given twice".into()));
            }
        }
        let updates = match updates {
            None => return Err(bad(UPDATES, "missing: this is not an AdamW state".into())),
            Some(t) => read_count(t).ok_or_else(|| bad(UPDATES, format!("expected a count tensor, found {t:?}")))?,
        };

        let mut states = BTreeMap::new();
        let mut idle = BTreeSet::new();
        for (&param, e) in &entries {
            let step_name = format!("{STEP_PREFIX}{param}");
            // Errors about the parameter itself name the first of its tensors that is present.
            let given = [(M_PREFIX, e.m), (V_PREFIX, e.v), (STEP_PREFIX, e.step)]
                .into_iter()
                .find_map(|(prefix, t)| t.map(|_| format!("{prefix}{param}")))
                .unwrap_or_else(|| step_name.clone());
            let Some(id) = store.id(param) else {
                return Err(bad(&given, format!("the model has no parameter `{param}`")));
            };
            if !store.is_trainable(id) {
                return Err(bad(&given, format!("parameter `{param}` is frozen in this model")));
            }
            let Some(step_t) = e.step else {
                return Err(bad(&step_name, "missing".into()));
            };
            let step = read_count(step_t).ok_or_else(|| bad(&step_name, format!("expected a count tensor, found {step_t:?}")))?;
            if step > updates {
                return Err(bad(&step_name, format!("{step} updates of this parameter but only {updates} steps")));
            }
            let shape = store.value(id).shape();
            if step == 0 {
                for (prefix, t) in [(M_PREFIX, e.m), (V_PREFIX, e.v)] {
                    if t.is_some() {
                        return Err(bad(&format!("{prefix}{param}"), "present for a parameter never updated (step 0)".into()));
                    }
                }
                idle.insert(param.to_string());
                continue;
            }
            let moment = |prefix: &str, t: Option<&Tensor>| -> Result<Vec<f32>> {
                let name = format!("{prefix}{param}");
                let t = t.ok_or_else(|| bad(&name, "missing".into()))?;
                if t.shape() != shape {
                    return Err(bad(&name, format!("parameter `{param}` has shape {shape:?}, this tensor {:?}", t.shape())));
                }
                if t.dtype() != DType::F32 {
                    return Err(bad(&name, format!("must be F32 to resume exactly, found {}", t.dtype().name())));
                }
                Ok(t.f32s().to_vec())
            };
            let m = moment(M_PREFIX, e.m)?;
            let v = moment(V_PREFIX, e.v)?;
            states.insert(param.to_string(), ParamState { step, shape: shape.to_vec(), m, v });
        }
        if updates > 0 {
            if let Some(id) = store.trainable_ids().find(|&id| !entries.contains_key(store.name(id))) {
                let param = store.name(id);
                return Err(bad(
                    &format!("{STEP_PREFIX}{param}"),
                    format!("missing: trainable parameter `{param}` has no optimiser state after {updates} steps (was the checkpoint written for other trainable parameters?)"),
                ));
            }
        }
        self.states = states;
        self.idle = idle;
        self.updates = updates;
        Ok(())
    }
}
