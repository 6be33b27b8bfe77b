//! The tape: a list of operations recorded in forward order, replayed backwards.
//!
//! An operation is recorded only when at least one of its inputs requires a gradient, that is,
//! when a trainable parameter is upstream of it. Everything computed before the first trainable
//! parameter is therefore plain inference: no node, no tensor kept for the backward pass. Each
//! recorded operation learns which of its inputs need a gradient (`needs`) before it decides
//! what to keep, so a linear layer with a frozen weight keeps only the weight (for the input
//! gradient) and never computes a weight gradient.

use std::collections::HashSet;

use crate::engine::autograd::param::{ParamId, ParamStore};
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeId(usize);

/// A value in the forward pass, with the node that produced it when it requires a gradient.
#[derive(Clone, Debug)]
pub struct Var {
    value: Tensor,
    node: Option<NodeId>,
    param: bool,
}

impl Var {
    /// A value that needs no gradient (inputs, masks, frozen results).
    pub fn constant(value: Tensor) -> Var {
        Var { value, node: None, param: false }
    }

    pub fn value(&self) -> &Tensor {
        &self.value
    }

    pub fn into_value(self) -> Tensor {
        self.value
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    /// True for a parameter's value: an operation that keeps it for the backward pass holds a
    /// reference to the parameter, not a copy of an activation.
    pub fn is_param(&self) -> bool {
        self.param
    }

    /// Keeps this value for the backward pass, remembering whether it is an activation (its
    /// bytes count against the tape) or a parameter (shared with the store).
    pub fn save(&self) -> Saved {
        Saved { tensor: self.value.clone(), activation: !self.param }
    }
}

/// A tensor an operation keeps for its backward pass.
#[derive(Clone, Debug)]
pub struct Saved {
    pub tensor: Tensor,
    /// False for a parameter value, which is owned by the store anyway.
    pub activation: bool,
}

impl Saved {
    pub fn activation(tensor: Tensor) -> Saved {
        Saved { tensor, activation: true }
    }
}

/// The backward half of a recorded operation.
pub trait Backward: Send + Sync {
    fn name(&self) -> &'static str;

    /// Gradients of the inputs, given the gradient of the output. Entry `i` must be `Some` when
    /// `needs[i]` and may be `None` otherwise (inputs that need none are never computed).
    fn backward(&self, grad_out: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>>;

    /// The tensors this operation keeps for its backward pass.
    fn saved(&self) -> Vec<&Saved> {
        Vec::new()
    }
}

enum Node {
    Leaf(ParamId),
    Op { op: Box<dyn Backward>, inputs: Vec<Option<NodeId>>, shapes: Vec<Vec<usize>> },
    /// An operation whose backward already ran (its saved tensors are freed).
    Done,
}

#[derive(Default)]
pub struct Tape {
    nodes: Vec<Node>,
    /// Inference: nothing is ever recorded, whatever is trainable.
    no_grad: bool,
}

/// What the tape holds, for tests and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapeStats {
    pub leaves: usize,
    pub ops: usize,
    /// Bytes of activations kept for backward, each buffer counted once.
    pub saved_activation_bytes: usize,
    /// Names of the recorded operations, in forward order.
    pub op_names: Vec<&'static str>,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// A tape that records nothing, even downstream of trainable parameters: for evaluation,
    /// where no gradient will be asked for.
    pub fn no_grad() -> Tape {
        Tape { nodes: Vec::new(), no_grad: true }
    }

    /// The value of a parameter; a leaf of the tape when the parameter is trainable.
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Var {
        let value = store.value(id).clone();
        let node = if store.is_trainable(id) && !self.no_grad {
            self.nodes.push(Node::Leaf(id));
            Some(NodeId(self.nodes.len() - 1))
        } else {
            None
        };
        Var { value, node, param: true }
    }

    /// Records an operation whose forward value is `value`. `make` builds its backward half
    /// from the `needs` of its inputs, and is called only when some input requires a gradient;
    /// otherwise nothing is recorded and nothing kept.
    pub fn record<F>(&mut self, value: Tensor, inputs: &[&Var], make: F) -> Var
    where
        F: FnOnce(&[bool]) -> Box<dyn Backward>,
    {
        let needs: Vec<bool> = inputs.iter().map(|v| v.requires_grad()).collect();
        if !needs.iter().any(|&n| n) {
            return Var::constant(value);
        }
        let op = make(&needs);
        self.nodes.push(Node::Op {
            op,
            inputs: inputs.iter().map(|v| v.node).collect(),
            shapes: inputs.iter().map(|v| v.shape().to_vec()).collect(),
        });
        Var { value, node: Some(NodeId(self.nodes.len() - 1)), param: false }
    }

    pub fn stats(&self) -> TapeStats {
        let mut stats = TapeStats::default();
        let mut seen = HashSet::new();
        for node in &self.nodes {
            match node {
                Node::Leaf(_) => stats.leaves += 1,
                Node::Op { op, .. } => {
                    stats.ops += 1;
                    stats.op_names.push(op.name());
                    for s in op.saved() {
                        if s.activation && seen.insert(s.tensor.storage_id()) {
                            stats.saved_activation_bytes += s.tensor.nbytes();
                        }
                    }
                }
                Node::Done => {}
            }
        }
        stats
    }

    /// Backpropagates from a scalar `loss`, adding each trainable parameter's gradient into its
    /// buffer in `store` (so micro-batches accumulate until `zero_grad`). Consumes the tape:
    /// every saved tensor is freed as soon as its operation's backward has run.
    pub fn backward(self, loss: &Var, store: &mut ParamStore) -> Result<()> {
        if loss.value.numel() != 1 {
            return Err(Error::shape("backward", format!("loss must be a scalar, found {:?}", loss.shape())));
        }
        let seed = Tensor::full(loss.shape(), 1.0);
        self.backward_from(loss, seed, store)
    }

    /// Backpropagates `grad` (the gradient of some scalar with respect to `out`).
    pub fn backward_from(mut self, out: &Var, grad: Tensor, store: &mut ParamStore) -> Result<()> {
        grad.expect_shape("backward seed", out.shape())?;
        let Some(start) = out.node else {
            return Err(Error::Usage(
                "backward: the output does not depend on any trainable parameter".into(),
            ));
        };
        let mut grads: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        grads[start.0] = Some(grad);
        for i in (0..=start.0).rev() {
            let Some(g) = grads[i].take() else { continue };
            match std::mem::replace(&mut self.nodes[i], Node::Done) {
                Node::Leaf(pid) => store.accumulate_grad(pid, g)?,
                Node::Op { op, inputs, shapes } => {
                    let needs: Vec<bool> = inputs.iter().map(|n| n.is_some()).collect();
                    let input_grads = op.backward(&g, &needs)?;
                    let name = op.name();
                    drop(op);
                    if input_grads.len() != inputs.len() {
                        return Err(Error::shape(name, "backward returned the wrong number of gradients"));
                    }
                    for ((input, ig), shape) in inputs.iter().zip(input_grads).zip(&shapes) {
                        let Some(node) = input else { continue };
                        // A fused operation must never drop a gradient silently.
                        let Some(ig) = ig else {
                            return Err(Error::shape(name, "backward gave no gradient for an input that needs one"));
                        };
                        ig.expect_shape(name, shape)?;
                        accumulate(&mut grads[node.0], ig);
                    }
                }
                Node::Done => {}
            }
        }
        Ok(())
    }
}

/// Adds `g` into a node's gradient (shapes were checked against the input's shape).
fn accumulate(slot: &mut Option<Tensor>, g: Tensor) {
    match slot {
        None => *slot = Some(g),
        Some(acc) => {
            for (a, b) in acc.f32s_mut().iter_mut().zip(g.f32s()) {
                *a += b;
            }
        }
    }
}
