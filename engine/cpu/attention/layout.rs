//! Where each sequence's query and key rows are: a padded batch, or packed variable-length
//! sequences (no padding at all, as flash-attention's `cu_seqlens`).

use crate::engine::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum SeqLayout {
    /// `batch` sequences of `q_len` query rows and `kv_len` key rows each; sequence `b` has
    /// query rows `b*q_len..` and key rows `b*kv_len..`. `key_mask` (`[batch, kv_len]`, 1 =
    /// real, 0 = padding) hides padding keys; padding queries are computed like the others.
    Padded { batch: usize, q_len: usize, kv_len: usize, key_mask: Option<Vec<f32>> },
    /// Sequence `b` has query rows `q_offsets[b]..q_offsets[b+1]` and key rows
    /// `k_offsets[b]..k_offsets[b+1]` (cumulative offsets starting at 0).
    Packed { q_offsets: Vec<usize>, k_offsets: Vec<usize> },
    /// Packed query rows as in `Packed`; sequence `b`'s keys are the `k_spans[b].1` rows from
    /// row `k_spans[b].0` of a larger key buffer (a preallocated KV cache read in place, where
    /// each sequence owns a slot of rows and only its filled rows are keys).
    Spans { q_offsets: Vec<usize>, k_spans: Vec<(usize, usize)> },
}

impl SeqLayout {
    /// Packed sequences with as many keys as queries (self-attention).
    pub fn packed(offsets: Vec<usize>) -> SeqLayout {
        SeqLayout::Packed { q_offsets: offsets.clone(), k_offsets: offsets }
    }

    /// Checks the offsets (non-decreasing, from 0, one list per side of equal length) and the
    /// mask size.
    pub fn validate(&self) -> Result<()> {
        match self {
            SeqLayout::Padded { batch, kv_len, key_mask, .. } => {
                if let Some(m) = key_mask {
                    if m.len() != batch * kv_len {
                        return Err(Error::shape("attention", format!("key mask has {} entries, expected {batch} x {kv_len}", m.len())));
                    }
                }
            }
            SeqLayout::Packed { q_offsets, k_offsets } => {
                for (what, o) in [("query", q_offsets), ("key", k_offsets)] {
                    if o.first() != Some(&0) || o.windows(2).any(|w| w[1] < w[0]) {
                        return Err(Error::shape("attention", format!("{what} offsets must start at 0 and not decrease: {o:?}")));
                    }
                }
                if q_offsets.len() != k_offsets.len() {
                    return Err(Error::shape("attention", "query and key offsets describe different numbers of sequences"));
                }
            }
            SeqLayout::Spans { q_offsets, k_spans } => {
                if q_offsets.first() != Some(&0) || q_offsets.windows(2).any(|w| w[1] < w[0]) {
                    return Err(Error::shape("attention", format!("query offsets must start at 0 and not decrease: {q_offsets:?}")));
                }
                if q_offsets.len() != k_spans.len() + 1 {
                    return Err(Error::shape("attention", "query offsets and key spans describe different numbers of sequences"));
                }
            }
        }
        Ok(())
    }

    pub fn batch(&self) -> usize {
        match self {
            SeqLayout::Padded { batch, .. } => *batch,
            SeqLayout::Packed { q_offsets, .. } | SeqLayout::Spans { q_offsets, .. } => q_offsets.len().saturating_sub(1),
        }
    }

    /// Total query rows.
    pub fn q_rows(&self) -> usize {
        match self {
            SeqLayout::Padded { batch, q_len, .. } => batch * q_len,
            SeqLayout::Packed { q_offsets, .. } | SeqLayout::Spans { q_offsets, .. } => q_offsets.last().copied().unwrap_or(0),
        }
    }

    /// Total key rows (for spans: the rows up to the end of the last-ending span).
    pub fn kv_rows(&self) -> usize {
        match self {
            SeqLayout::Padded { batch, kv_len, .. } => batch * kv_len,
            SeqLayout::Packed { k_offsets, .. } => k_offsets.last().copied().unwrap_or(0),
            SeqLayout::Spans { k_spans, .. } => k_spans.iter().map(|&(s, n)| s + n).max().unwrap_or(0),
        }
    }

    /// First query row and number of queries of sequence `b`.
    #[inline(always)]
    pub fn q_range(&self, b: usize) -> (usize, usize) {
        match self {
            SeqLayout::Padded { q_len, .. } => (b * q_len, *q_len),
            SeqLayout::Packed { q_offsets, .. } | SeqLayout::Spans { q_offsets, .. } => (q_offsets[b], q_offsets[b + 1] - q_offsets[b]),
        }
    }

    /// First key row and number of keys of sequence `b`.
    #[inline(always)]
    pub fn k_range(&self, b: usize) -> (usize, usize) {
        match self {
            SeqLayout::Padded { kv_len, .. } => (b * kv_len, *kv_len),
            SeqLayout::Packed { k_offsets, .. } => (k_offsets[b], k_offsets[b + 1] - k_offsets[b]),
            SeqLayout::Spans { k_spans, .. } => k_spans[b],
        }
    }

    /// The longest sequence's key count (sizes the score buffers).
    pub fn max_keys(&self) -> usize {
        (0..self.batch()).map(|b| self.k_range(b).1).max().unwrap_or(0)
    }

    /// Whether query `t` of sequence `b` sees key `j` of the same sequence (both local
    /// indices): the key is real and, if `causal`, `j <= t + keys - queries`.
    #[inline(always)]
    pub fn visible(&self, causal: bool, b: usize, t: usize, j: usize) -> bool {
        let real = match self {
            SeqLayout::Padded { kv_len, key_mask: Some(m), .. } => m[b * kv_len + j] != 0.0,
            _ => true,
        };
        if !causal {
            return real;
        }
        let (_, nq) = self.q_range(b);
        let (_, nk) = self.k_range(b);
        real && j + nq <= t + nk
    }
}
