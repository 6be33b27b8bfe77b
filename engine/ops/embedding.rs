//! Embedding lookup: token ids into rows of a table `[vocab, d]` (f32, bf16 or f16 storage,
//! possibly memory-mapped); see [`crate::engine::cpu::embedding`].
//!
//! Recorded only when the table is trainable (full fine-tuning); backward then keeps the ids
//! (a plain `Vec<u32>`, not a tensor) and scatter-adds into a dense f32 table gradient.

use crate::engine::autograd::{Backward, Tape, Var};
use crate::engine::cpu::embedding as k;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::{numel, Tensor};

/// Looks up `ids` (laid out as `shape`, e.g. `[batch, seq]`) in `table`; returns
/// `[shape..., d]`. An id outside the vocabulary is an error naming the id and the vocabulary.
pub fn embedding(tape: &mut Tape, table: &Var, ids: &[u32], shape: &[usize]) -> Result<Var> {
    let [vocab, d] = *table.shape() else {
        return Err(Error::shape("embedding", format!("table must be [vocab, dim], found {:?}", table.shape())));
    };
    if numel(shape) != ids.len() {
        return Err(Error::shape("embedding", format!("{} ids cannot have shape {shape:?}", ids.len())));
    }
    if let Some((pos, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= vocab) {
        return Err(Error::shape(
            "embedding",
            format!("token id {id} (position {pos}) is out of range for a vocabulary of {vocab}"),
        ));
    }
    let mut y = vec![0.0f32; ids.len() * d];
    k::embedding(ids, table.value().view(), d, &mut y);
    let mut out_shape = shape.to_vec();
    out_shape.push(d);
    let value = Tensor::new(y, &out_shape);
    Ok(tape.record(value, &[table], |_| Box::new(EmbeddingBackward { ids: ids.to_vec(), vocab, d })))
}

struct EmbeddingBackward {
    ids: Vec<u32>,
    vocab: usize,
    d: usize,
}

impl Backward for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let dtable = k::embedding_backward(&self.ids, &g.to_f32_cow(), self.vocab, self.d);
        Ok(vec![Some(Tensor::new(dtable, &[self.vocab, self.d]))])
    }
}
