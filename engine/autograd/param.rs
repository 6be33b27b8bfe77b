//! Parameters: named tensors, each trainable or frozen.
//!
//! A frozen parameter never gets a gradient buffer: only trainable parameters become leaves of
//! the tape, and only leaves receive gradients. The store counts the gradient buffers so that
//! tests (and the training report) can show how little memory adaptation takes.

use std::collections::HashMap;

use crate::engine::error::{Error, Result};
use crate::engine::tensor::{DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub(crate) usize);

impl ParamId {
    pub fn index(self) -> usize {
        self.0
    }
}

pub struct Param {
    pub name: String,
    value: Tensor,
    trainable: bool,
    grad: Option<Tensor>,
}

impl Param {
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    pub fn trainable(&self) -> bool {
        self.trainable
    }
    pub fn grad(&self) -> Option<&Tensor> {
        self.grad.as_ref()
    }
}

#[derive(Default)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, ParamId>,
}

impl ParamStore {
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    /// Adds a parameter. A trainable parameter is stored as owned f32 (the optimiser updates it
    /// in place); a frozen one keeps its storage (a mapped bf16 weight stays mapped).
    pub fn add(&mut self, name: impl Into<String>, value: Tensor, trainable: bool) -> Result<ParamId> {
        let name = name.into();
        if self.index.contains_key(&name) {
            return Err(Error::Usage(format!("parameter `{name}` is defined twice")));
        }
        let value = if trainable { owned_f32(value) } else { value };
        let id = ParamId(self.params.len());
        self.index.insert(name.clone(), id);
        self.params.push(Param { name, value, trainable, grad: None });
        Ok(id)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.index.get(name).copied()
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }

    pub fn name(&self, id: ParamId) -> &str {
        &self.params[id.0].name
    }

    pub fn is_trainable(&self, id: ParamId) -> bool {
        self.params[id.0].trainable
    }

    pub fn ids(&self) -> impl Iterator<Item = ParamId> + '_ {
        (0..self.params.len()).map(ParamId)
    }

    pub fn trainable_ids(&self) -> impl Iterator<Item = ParamId> + '_ {
        self.ids().filter(|&id| self.params[id.0].trainable)
    }

    /// Replaces a parameter's value (same shape), e.g. after an optimiser step.
    pub fn set_value(&mut self, id: ParamId, value: Tensor) -> Result<()> {
        let p = &mut self.params[id.0];
        if value.shape() != p.value.shape() {
            return Err(Error::shape(
                "set_value",
                format!("parameter `{}` has shape {:?}, new value {:?}", p.name, p.value.shape(), value.shape()),
            ));
        }
        p.value = if p.trainable { owned_f32(value) } else { value };
        Ok(())
    }

    /// Mutable f32 elements of a trainable parameter (for the optimiser).
    pub fn value_mut(&mut self, id: ParamId) -> &mut [f32] {
        self.params[id.0].value.f32s_mut()
    }

    /// Marks a parameter trainable or frozen. Freezing drops its gradient buffer; making a
    /// mapped or bf16 weight trainable copies it into owned f32 storage.
    pub fn set_trainable(&mut self, id: ParamId, trainable: bool) {
        let p = &mut self.params[id.0];
        p.trainable = trainable;
        if trainable {
            p.value = owned_f32(p.value.clone());
        } else {
            p.grad = None;
        }
    }

    /// Sets every parameter whose name satisfies `pred` to `trainable`; returns how many matched.
    pub fn set_trainable_where(&mut self, trainable: bool, pred: impl Fn(&str) -> bool) -> usize {
        let ids: Vec<ParamId> = self.ids().filter(|&id| pred(&self.params[id.0].name)).collect();
        for &id in &ids {
            self.set_trainable(id, trainable);
        }
        ids.len()
    }

    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        self.params[id.0].grad.as_ref()
    }

    /// The elements of a parameter's gradient buffer, when it has one, to change in place
    /// (gradient clipping scales them).
    pub fn grad_mut(&mut self, id: ParamId) -> Option<&mut [f32]> {
        self.params[id.0].grad.as_mut().map(|g| g.f32s_mut())
    }

    /// Adds `g` into the parameter's gradient buffer (allocated on first use).
    pub(crate) fn accumulate_grad(&mut self, id: ParamId, g: Tensor) -> Result<()> {
        let p = &mut self.params[id.0];
        if !p.trainable {
            // The tape makes leaves of trainable parameters only; reaching this is a bug.
            return Err(Error::Usage(format!("gradient for frozen parameter `{}`", p.name)));
        }
        if g.shape() != p.value.shape() {
            return Err(Error::shape(
                "gradient",
                format!("parameter `{}` has shape {:?}, gradient {:?}", p.name, p.value.shape(), g.shape()),
            ));
        }
        match &mut p.grad {
            None => p.grad = Some(g),
            Some(acc) => {
                for (a, b) in acc.f32s_mut().iter_mut().zip(g.f32s()) {
                    *a += b;
                }
            }
        }
        Ok(())
    }

    /// Sets every gradient buffer to zero, keeping the buffers (the next step reuses them).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            if let Some(g) = &mut p.grad {
                g.f32s_mut().fill(0.0);
            }
        }
    }

    /// Number of gradient buffers allocated and their total size in bytes.
    pub fn grad_buffers(&self) -> (usize, usize) {
        self.params
            .iter()
            .filter_map(|p| p.grad.as_ref())
            .fold((0, 0), |(n, b), g| (n + 1, b + g.nbytes()))
    }

    /// Number of trainable scalars.
    pub fn trainable_numel(&self) -> usize {
        self.params.iter().filter(|p| p.trainable).map(|p| p.value.numel()).sum()
    }

    pub fn total_numel(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }
}

fn owned_f32(t: Tensor) -> Tensor {
    if t.dtype() == DType::F32 && !t.is_mapped() {
        t
    } else {
        let shape = t.shape().to_vec();
        Tensor::new(t.to_f32_cow().into_owned(), &shape)
    }
}
