//! What the adaptation modules need to know of a backbone: its sizes and the names of its
//! modules, for the BERT family (encoders) and the LLaMA family (decoders).
//!
//! Module paths are transformers' (and so peft's) names inside one layer:
//!
//! | projection | BERT / XLM-R (`encoder.layer.N.`) | LLaMA (`layers.N.`) |
//! |---|---|---|
//! | q, k, v | `attention.self.{query,key,value}` | `self_attn.{q,k,v}_proj` |
//! | o | `attention.output.dense` | `self_attn.o_proj` |
//! | ffn_gate | - | `mlp.gate_proj` |
//! | ffn_in | `intermediate.dense` | `mlp.up_proj` |
//! | ffn_out | `output.dense` | `mlp.down_proj` |
//!
//! The backbone's parameters sit under a model prefix in the store: none for BERT
//! (`encoder.layer.3...`), `model.` for LLaMA (`model.layers.3...`, as `LlamaForCausalLM`
//! names them). The adaptation modules' own parameters are named after the peft key without
//! `base_model.model.` and without that prefix (`lora.layers.3.self_attn.q_proj.lora_A.weight`).
//!
//! Prefix keys and values are as wide as the key projection: `hidden` on BERT,
//! `kv_heads * head_dim` on a grouped-query decoder (peft 0.21 sizes them the same way, with
//! `num_attention_heads` = the key/value heads).

use crate::engine::error::{Error, Result};
use crate::models::config::BertConfig;
use crate::models::hooks::{Proj, Site};
use crate::models::llama::LlamaConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BERT / XLM-R encoders.
    Bert,
    /// LLaMA-family decoders.
    Llama,
}

/// A backbone as the adaptation modules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    pub family: Family,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (= attention heads without grouped-query attention).
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl From<&BertConfig> for Arch {
    fn from(c: &BertConfig) -> Arch {
        Arch {
            family: Family::Bert,
            num_layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_attention_heads: c.num_attention_heads,
            num_kv_heads: c.num_attention_heads,
            head_dim: c.hidden_size / c.num_attention_heads.max(1),
        }
    }
}

impl From<&LlamaConfig> for Arch {
    fn from(c: &LlamaConfig) -> Arch {
        Arch {
            family: Family::Llama,
            num_layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_attention_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
    }
}

impl From<&Arch> for Arch {
    fn from(a: &Arch) -> Arch {
        a.clone()
    }
}

const BERT_PROJS: [Proj; 6] = [Proj::Query, Proj::Key, Proj::Value, Proj::Output, Proj::FfnIn, Proj::FfnOut];
const LLAMA_PROJS: [Proj; 7] = [Proj::Query, Proj::Key, Proj::Value, Proj::Output, Proj::FfnGate, Proj::FfnIn, Proj::FfnOut];

impl Arch {
    /// The projections of a layer, in the order modules list them.
    pub fn projections(&self) -> &'static [Proj] {
        match self.family {
            Family::Bert => &BERT_PROJS,
            Family::Llama => &LLAMA_PROJS,
        }
    }

    /// Where the layers sit, relative to the model prefix: `encoder.layer.` or `layers.`.
    pub fn layers_path(&self) -> &'static str {
        match self.family {
            Family::Bert => "encoder.layer.",
            Family::Llama => "layers.",
        }
    }

    /// The backbone's prefix in the store: `""` (BERT) or `model.` (LLaMA).
    pub fn store_prefix(&self) -> &'static str {
        match self.family {
            Family::Bert => "",
            Family::Llama => "model.",
        }
    }

    /// The module path of a projection inside a layer (see the module table).
    pub fn module_path(&self, proj: Proj) -> &'static str {
        match self.family {
            Family::Bert => super::names::module_path(proj),
            Family::Llama => match proj {
                Proj::Query => "self_attn.q_proj",
                Proj::Key => "self_attn.k_proj",
                Proj::Value => "self_attn.v_proj",
                Proj::Output => "self_attn.o_proj",
                Proj::FfnGate => "mlp.gate_proj",
                Proj::FfnIn => "mlp.up_proj",
                Proj::FfnOut => "mlp.down_proj",
            },
        }
    }

    /// The projection whose module path is `path`.
    pub fn proj_of_path(&self, path: &str) -> Option<Proj> {
        self.projections().iter().copied().find(|&p| self.module_path(p) == path)
    }

    /// The store name of a projection's frozen weight `[out, in]`.
    pub fn weight_name(&self, layer: usize, proj: Proj) -> String {
        format!("{}{}{layer}.{}.weight", self.store_prefix(), self.layers_path(), self.module_path(proj))
    }

    /// `(in, out)` features of a projection.
    pub fn proj_dims(&self, proj: Proj) -> (usize, usize) {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let (q, kv) = (self.num_attention_heads * self.head_dim, self.num_kv_heads * self.head_dim);
        match proj {
            Proj::Query => (h, q),
            Proj::Key | Proj::Value => (h, kv),
            Proj::Output => (q, h),
            Proj::FfnIn | Proj::FfnGate => (h, f),
            Proj::FfnOut => (f, h),
        }
    }

    /// Width of one layer's prefix keys (and values): `kv_heads * head_dim`.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// A projection from its config name: q, k, v, o, ffn_in, ffn_out, and on a decoder
    /// ffn_gate; peft's module names are accepted too (query, key, value on BERT; q_proj ..
    /// down_proj, gate, up, down on LLaMA).
    pub fn parse_proj(&self, s: &str) -> Result<Proj> {
        let p = match (self.family, s) {
            (_, "q") | (Family::Bert, "query") | (Family::Llama, "q_proj") => Proj::Query,
            (_, "k") | (Family::Bert, "key") | (Family::Llama, "k_proj") => Proj::Key,
            (_, "v") | (Family::Bert, "value") | (Family::Llama, "v_proj") => Proj::Value,
            (_, "o") | (Family::Llama, "o_proj") => Proj::Output,
            (_, "ffn_in") | (Family::Llama, "up" | "up_proj") => Proj::FfnIn,
            (_, "ffn_out") | (Family::Llama, "down" | "down_proj") => Proj::FfnOut,
            (Family::Llama, "ffn_gate" | "gate" | "gate_proj") => Proj::FfnGate,
            (Family::Bert, "ffn_gate" | "gate") => {
                return Err(Error::Usage(format!("`{s}`: a BERT-family encoder has no gated feed-forward; expected one of q, k, v, o, ffn_in, ffn_out")))
            }
            (Family::Bert, _) => return Err(Error::Usage(format!("`{s}` is not a projection; expected one of q, k, v, o, ffn_in, ffn_out"))),
            (Family::Llama, _) => {
                return Err(Error::Usage(format!("`{s}` is not a projection; expected one of q, k, v, o, gate, up, down (or ffn_gate, ffn_in, ffn_out)")))
            }
        };
        Ok(p)
    }

    /// The module whose output a bottleneck adapter follows: BERT's `BertSelfOutput`
    /// (`attention.output`) / `BertOutput` (`output`); LLaMA's attention (`self_attn`, the
    /// output of `o_proj`) / feed-forward (`mlp`, the output of `down_proj`).
    pub fn site_module(&self, site: Site) -> &'static str {
        match (self.family, site) {
            (Family::Bert, Site::Attention) => "attention.output",
            (Family::Bert, Site::Ffn) => "output",
            (Family::Llama, Site::Attention) => "self_attn",
            (Family::Llama, Site::Ffn) => "mlp",
        }
    }

    /// The store name of the token embedding table.
    pub fn word_embeddings(&self) -> &'static str {
        match self.family {
            Family::Bert => "embeddings.word_embeddings.weight",
            Family::Llama => "model.embed_tokens.weight",
        }
    }

    /// The layer index of a backbone parameter (`encoder.layer.<i>.…`, `model.layers.<i>.…`).
    pub fn layer_of(&self, name: &str) -> Option<usize> {
        let rest = name.strip_prefix(self.store_prefix())?.strip_prefix(self.layers_path())?;
        rest.split('.').next()?.parse().ok()
    }

    /// Whether a backbone parameter is part of the token embeddings (trained by fine-tuning
    /// only with `embeddings = true`): BERT's `embeddings.*`; LLaMA's `model.embed_tokens.*`
    /// and an untied `lm_head.*` (the output embedding).
    pub fn is_embedding(&self, name: &str) -> bool {
        match self.family {
            Family::Bert => name.starts_with("embeddings."),
            Family::Llama => name.starts_with("model.embed_tokens.") || name.starts_with("lm_head."),
        }
    }

    /// Backbone parameters above the layers (LLaMA's final norm `model.norm.*`): trained with
    /// the top layer by fine-tuning. BERT has none (its pooler is not loaded).
    pub fn is_top(&self, name: &str) -> bool {
        self.family == Family::Llama && name.starts_with("model.norm.")
    }

    /// The store name of an adaptation parameter: `<method>.<layers path><layer>.<module>.<tail>`
    /// (the peft key without `base_model.model.` and the model prefix).
    pub fn module_param(&self, method: &str, layer: usize, module: &str, tail: &str) -> String {
        format!("{method}.{}{layer}.{module}.{tail}", self.layers_path())
    }
}
