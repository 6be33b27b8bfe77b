//! Where a decoder's weights come from: a Hugging Face directory (`config.json` +
//! safetensors) or a GGUF file, both giving tensors under transformers' names.
//!
//! GGUF names map to transformers' as in its GGUF loader (`token_embd` -> `embed_tokens`,
//! `blk.N.attn_q` -> `layers.N.self_attn.q_proj`, ...), and the rows of the Q and K projections
//! are put back in transformers' order while they are dequantised (llama.cpp interleaves the
//! two rotary halves of each head).

use std::path::{Path, PathBuf};

use crate::data::TextTokenizer;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::{DType, Tensor};
use crate::models::gguf::{self, GgufFile};
use crate::models::llama::config::LlamaConfig;
use crate::models::weights::Weights;

/// A model given on the command line or in a config: a directory or a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelPath {
    /// A Hugging Face directory with `config.json`.
    Dir(PathBuf),
    /// A GGUF file (given directly, or the only `.gguf` in a directory without `config.json`).
    Gguf(PathBuf),
}

impl ModelPath {
    /// Resolves `path`: a GGUF file, a directory with `config.json`, or a directory holding
    /// exactly one `.gguf` file.
    pub fn resolve(path: &Path) -> Result<ModelPath> {
        if path.is_file() {
            return if gguf::is_gguf(path) {
                Ok(ModelPath::Gguf(path.to_path_buf()))
            } else {
                Err(Error::format(path, "not a model: a file must be GGUF (a model directory holds config.json)"))
            };
        }
        if !path.is_dir() {
            return Err(Error::io("cannot open", path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory")));
        }
        if path.join("config.json").is_file() {
            return Ok(ModelPath::Dir(path.to_path_buf()));
        }
        let entries = std::fs::read_dir(path).map_err(|e| Error::io("cannot list", path, e))?;
        let mut ggufs: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))).collect();
        ggufs.sort();
        match ggufs.len() {
            1 => Ok(ModelPath::Gguf(ggufs.remove(0))),
            0 => Err(Error::format(path, "not a model directory: no config.json and no .gguf file")),
            n => Err(Error::format(path, format!("{n} .gguf files and no config.json: name the file to use"))),
        }
    }

    /// Whether this is a decoder: a GGUF file, or a directory whose `config.json` says
    /// `"model_type": "llama"` (anything else is left to the encoder's loader).
    pub fn is_decoder(&self) -> bool {
        match self {
            ModelPath::Gguf(_) => true,
            ModelPath::Dir(d) => std::fs::read_to_string(d.join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v.get("model_type").and_then(|m| m.as_str()) == Some("llama")),
        }
    }

    /// The directory that holds the model's side files (`tokenizer.json`, ...).
    pub fn dir(&self) -> &Path {
        match self {
            ModelPath::Dir(d) => d,
            ModelPath::Gguf(f) => f.parent().unwrap_or(Path::new(".")),
        }
    }

    /// The directory or the file.
    pub fn path(&self) -> &Path {
        match self {
            ModelPath::Dir(p) | ModelPath::Gguf(p) => p,
        }
    }

    /// What errors and outputs call the model.
    pub fn display(&self) -> String {
        match self {
            ModelPath::Dir(d) | ModelPath::Gguf(d) => d.display().to_string(),
        }
    }
}

/// The model's tokenizer: `tokenizer.json` in the model's directory when there is one, else
/// (a GGUF file) the one its metadata describes ([`gguf::tokenizer`]). Padding uses the
/// config's padding token, else its first end-of-sequence token (a decoder's padding is never
/// attended to).
pub fn load_tokenizer(path: &ModelPath, config: &LlamaConfig) -> Result<TextTokenizer> {
    let pad = config.pad_token_id.or(config.eos_token_ids.first().copied());
    let json = path.dir().join("tokenizer.json");
    match path {
        ModelPath::Gguf(f) if !json.is_file() => {
            let file = GgufFile::open(f)?;
            let built = gguf::tokenizer::build(&file)?;
            let pad = built.special.pad.or(pad).unwrap_or(0);
            TextTokenizer::from_tokenizer(built.tokenizer, f, pad)
        }
        _ => TextTokenizer::from_file(&json, pad),
    }
}

/// An opened weight source.
pub enum Source {
    Safetensors(Weights),
    Gguf(GgufFile),
}

impl Source {
    /// Opens the weights and reads the configuration.
    pub fn open(path: &ModelPath) -> Result<(LlamaConfig, Source)> {
        match path {
            ModelPath::Dir(d) => {
                let config = LlamaConfig::from_file(&d.join("config.json"))?;
                Ok((config, Source::Safetensors(Weights::open(d)?)))
            }
            ModelPath::Gguf(f) => {
                let file = GgufFile::open(f)?;
                let config = LlamaConfig::from_gguf(&file)?;
                Ok((config, Source::Gguf(file)))
            }
        }
    }

    /// Whether the source has the tensor of transformers name `name`.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Source::Safetensors(w) => w.resolve(name).is_some(),
            Source::Gguf(g) => gguf_name(name).is_some_and(|n| g.info(&n).is_some()),
        }
    }

    /// The tensor of transformers name `name` (`model.layers.0.self_attn.q_proj.weight`,
    /// `lm_head.weight`, ...), of `shape`, stored as `dtype` (kept in place when the file
    /// already has that type).
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType, config: &LlamaConfig) -> Result<Tensor> {
        match self {
            Source::Safetensors(w) => {
                let stored = w.resolve(name).unwrap_or(name);
                let t = w.get(stored, shape)?;
                Ok(if t.dtype() == dtype { t } else { t.to_dtype(dtype) })
            }
            Source::Gguf(g) => {
                let file_name = gguf_name(name).ok_or_else(|| Error::tensor(g.path(), name, "has no GGUF counterpart"))?;
                let heads = if name.ends_with("self_attn.q_proj.weight") {
                    Some(config.num_attention_heads)
                } else if name.ends_with("self_attn.k_proj.weight") {
                    Some(config.num_key_value_heads)
                } else {
                    None
                };
                let order = match heads {
                    None => None,
                    Some(h) => Some(gguf::unpermute_qk_rows(shape[0], h).ok_or_else(|| {
                        Error::tensor(g.path(), &file_name, format!("{} rows cannot be {h} heads of an even size", shape[0]))
                    })?),
                };
                g.tensor_rows(&file_name, shape, dtype, order.as_deref())
            }
        }
    }
}

/// The GGUF name of a transformers LLaMA parameter name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    let fixed = match hf {
        "embed_tokens.weight" => Some("token_embd.weight"),
        "norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("layers.")?;
    let (layer, module) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, suffix) = module.rsplit_once('.')?;
    let short = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn names_follow_transformers_gguf_mapping() {
        assert_eq!(gguf_name("model.embed_tokens.weight").as_deref(), Some("token_embd.weight"));
        assert_eq!(gguf_name("lm_head.weight").as_deref(), Some("output.weight"));
        assert_eq!(gguf_name("model.layers.12.self_attn.k_proj.weight").as_deref(), Some("blk.12.attn_k.weight"));
        assert_eq!(gguf_name("model.layers.3.post_attention_layernorm.weight").as_deref(), Some("blk.3.ffn_norm.weight"));
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name("model.rotary.inv_freq"), None);
    }
}
