//! What the benches measure: the groups of kernels, the element types, and the shapes, with
//! defaults taken from the models of the SPEC (multilingual-e5-small: hidden 384, 12 heads of
//! 32, FFN 1536; SmolLM2-135M: hidden 576, 9 query heads of 64 sharing 3 key/value heads, FFN
//! 1536, vocabulary 49152) plus a head dimension of 128 (12 heads sharing 2, as Qwen2.5-1.5B),
//! and tiny ones (`quick`) that run the whole list on the host shim in seconds.

use super::super::kernels::KernelPath;
use super::super::Elem;

/// A group of benchmarks (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Copy,
    Attention,
    Lora,
    Align,
    Norm,
    Activation,
    CrossEntropy,
    AdamW,
    /// A whole training step of a model (forward, backward, clip, AdamW): opt-in, since it
    /// loads a model; its specs come from the caller.
    Step,
}

/// Every kernel group, in the order they run (the step is asked for by name).
pub const GROUPS: [Group; 8] =
    [Group::Copy, Group::Attention, Group::Lora, Group::Align, Group::Norm, Group::Activation, Group::CrossEntropy, Group::AdamW];

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Copy => "copy",
            Group::Attention => "attention",
            Group::Lora => "lora",
            Group::Align => "align",
            Group::Norm => "norm",
            Group::Activation => "activation",
            Group::CrossEntropy => "ce",
            Group::AdamW => "adamw",
            Group::Step => "step",
        }
    }

    pub fn parse(s: &str) -> Option<Group> {
        GROUPS.into_iter().chain([Group::Step]).find(|g| g.name() == s)
    }
}

/// How the sequences of an attention batch lie in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `batch` sequences of `seq` real tokens each (the padded layout with no padding: what
    /// PyTorch's flash attention takes).
    Dense,
    /// Sequences of different lengths ([`super::ragged_lengths`]) packed without padding.
    Packed,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Dense => "dense",
            Layout::Packed => "packed",
        }
    }

    pub fn parse(s: &str) -> Option<Layout> {
        [Layout::Dense, Layout::Packed].into_iter().find(|l| l.name() == s)
    }
}

/// The attention sizes of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnModel {
    pub name: String,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

/// One adapted projection `din -> dout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraShape {
    pub name: String,
    pub din: usize,
    pub dout: usize,
}

/// Everything a bench run measures.
#[derive(Clone, Debug)]
pub struct Config {
    pub groups: Vec<Group>,
    pub dtypes: Vec<Elem>,
    /// Sequences per batch (attention, and the rows of the row-wise kernels: batch x seq).
    pub batch: usize,
    pub seq: usize,
    pub prefix: usize,
    pub models: Vec<AttnModel>,
    pub layouts: Vec<Layout>,
    pub lora: Vec<LoraShape>,
    pub rank: usize,
    pub lora_alpha: f32,
    /// Alignment pairs, tokens per side, hidden sizes.
    pub align_pairs: usize,
    pub align_tokens: usize,
    pub hidden: Vec<usize>,
    /// Width of the FFN activations (GELU, SwiGLU).
    pub ffn: usize,
    pub vocab: usize,
    /// Rows of the cross-entropy (target tokens).
    pub ce_rows: usize,
    /// AdamW: (tensors, elements per tensor) per case.
    pub adamw: Vec<(usize, usize)>,
    pub copy_bytes: usize,
    pub warmup: usize,
    pub iters: usize,
    /// Bytes copied before each timed launch to evict the L2 cache (0: no flush).
    pub flush_bytes: usize,
    pub path: KernelPath,
}

fn model(name: &str, heads: usize, kv_heads: usize, head_dim: usize, causal: bool) -> AttnModel {
    AttnModel { name: name.into(), heads, kv_heads, head_dim, causal }
}

fn proj(name: &str, din: usize, dout: usize) -> LoraShape {
    LoraShape { name: name.into(), din, dout }
}

const MIB: usize = 1 << 20;

impl Config {
    /// The models' shapes: 8 sequences of 256 tokens with 20 prefix tokens, LoRA rank 8.
    pub fn full() -> Config {
        Config {
            groups: GROUPS.to_vec(),
            dtypes: vec![Elem::BF16, Elem::F16, Elem::F32],
            batch: 8,
            seq: 256,
            prefix: 20,
            models: vec![model("e5-small", 12, 12, 32, false), model("smollm2-135m", 9, 3, 64, true), model("d128", 12, 2, 128, true)],
            layouts: vec![Layout::Dense, Layout::Packed],
            lora: vec![
                proj("e5.q", 384, 384),
                proj("e5.ffn_in", 384, 1536),
                proj("smollm2.q", 576, 576),
                proj("smollm2.v", 576, 192),
                proj("d128.q", 1536, 1536),
            ],
            rank: 8,
            lora_alpha: 16.0,
            align_pairs: 32,
            align_tokens: 128,
            hidden: vec![384, 576],
            ffn: 1536,
            vocab: 49152,
            ce_rows: 1024,
            adamw: vec![(120, 4608), (4, 4 * MIB)],
            copy_bytes: 512 * MIB,
            warmup: 10,
            iters: 50,
            flush_bytes: 256 * MIB,
            path: KernelPath::Auto,
        }
    }

    /// Tiny shapes of the same variety (every dtype, head dimension, layout, causal or not):
    /// the whole list runs on the host shim in seconds. Timings mean nothing.
    pub fn quick() -> Config {
        Config {
            batch: 2,
            seq: 12,
            prefix: 3,
            models: vec![model("e5-small", 2, 2, 32, false), model("smollm2-135m", 3, 1, 64, true), model("d128", 2, 1, 128, true)],
            lora: vec![proj("a", 32, 48), proj("b", 48, 16)],
            rank: 4,
            lora_alpha: 8.0,
            align_pairs: 3,
            align_tokens: 8,
            hidden: vec![32],
            ffn: 40,
            vocab: 100,
            ce_rows: 8,
            adamw: vec![(3, 1000)],
            copy_bytes: MIB,
            warmup: 1,
            iters: 3,
            flush_bytes: 0,
            ..Config::full()
        }
    }

    /// Rows of the row-wise kernels (norms, activations): every token of the batch.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}
