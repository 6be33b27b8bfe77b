//! A `tokenizers` tokenizer built from a GGUF file's vocabulary, merges and special tokens, for
//! a model that comes without `tokenizer.json`.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`: GPT-2, SmolLM, LLaMA 3, ...) is built.
//! The tokenizer is written as the `tokenizer.json` a Hugging Face checkpoint of the same
//! family carries and loaded by the `tokenizers` crate, so it runs the same code as transformers'
//! fast tokenizers:
//!
//! - model: BPE over the file's tokens (ids in file order) and merges, no unknown token;
//! - pre-tokenizer by `tokenizer.ggml.pre`, the split the merges were learned with: GPT-2's
//!   regex (`default`, `gpt2`), SmolLM's single digits then GPT-2's regex (`smollm`, as its
//!   tokenizer.json and llama.cpp split), LLaMA 3's regex (`llama-bpe`, `llama3`, ...);
//! - added tokens: those the file marks control (type 3) as special tokens, user-defined
//!   (type 4) as plain added tokens, both matched whole (transformers' `add_gguf_special_tokens`);
//! - the BOS / EOS token put around each text when `tokenizer.ggml.add_bos_token` /
//!   `add_eos_token` say so; byte-level decoding.
//!
//! Tokens spelled outside GPT-2's byte alphabet are re-spelled through it, as transformers does.

use serde_json::{json, Value as Json};

use super::GgufFile;
use crate::engine::error::{Error, Result};

/// GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the others map to
/// code points from 256 on.
pub fn byte_alphabet() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        out[b as usize] = if printable {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).expect("valid code point")
        };
    }
    out
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of `tokenizer.ggml.pre`, or `None` when unknown.
fn pre_tokenizer(pre: &str) -> Option<Json> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    Some(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "falcon3" | "dbrx" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]}),
        _ => return None,
    })
}

pub const SUPPORTED_PRE: &str = "default, gpt2, smollm, llama-bpe, llama3, llama-v3, smaug-bpe, falcon3, dbrx";

/// The special token ids a GGUF names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
}

pub struct GgufTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub special: SpecialIds,
}

/// Builds the tokenizer of `file` (see the module comment).
pub fn build(file: &GgufFile) -> Result<GgufTokenizer> {
    let json = tokenizer_json(file)?;
    let special = special_ids(file)?;
    let text = serde_json::to_string(&json).expect("JSON serialises");
    let tokenizer: tokenizers::Tokenizer = text
        .parse()
        .map_err(|e| Error::tokenizer(file.path(), format!("cannot build a tokenizer from the GGUF vocabulary: {e}")))?;
    Ok(GgufTokenizer { tokenizer, special })
}

fn special_ids(file: &GgufFile) -> Result<SpecialIds> {
    let id = |k: &str| -> Result<Option<u32>> {
        let key = format!("tokenizer.ggml.{k}_token_id");
        match file.opt_usize(&key)? {
            Some(v) if v > u32::MAX as usize => Err(Error::config(file.path(), key, format!("{v} is not a token id"))),
            v => Ok(v.map(|v| v as u32)),
        }
    };
    Ok(SpecialIds { bos: id("bos")?, eos: id("eos")?, pad: id("padding")?, unk: id("unknown")? })
}

/// The `tokenizer.json` equivalent of the file's tokenizer metadata.
pub fn tokenizer_json(file: &GgufFile) -> Result<Json> {
    let path = file.path();
    let model = file.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::config(
            path,
            "tokenizer.ggml.model",
            format!("`{model}` tokenizers are not built from GGUF metadata (only byte-level BPE, \"gpt2\"); put the model's tokenizer.json next to the file"),
        ));
    }
    let pre_name = match file.get("tokenizer.ggml.pre") {
        None => "default",
        Some(_) => file.string("tokenizer.ggml.pre")?,
    };
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        Error::config(path, "tokenizer.ggml.pre", format!("pre-tokenizer `{pre_name}` is not known (known: {SUPPORTED_PRE}); put the model's tokenizer.json next to the file"))
    })?;
    let tokens = file
        .opt_array("tokenizer.ggml.tokens", "strings", |v| v.as_str())?
        .ok_or_else(|| Error::config(path, "tokenizer.ggml.tokens", "missing; expected the vocabulary"))?;
    let merges = file
        .opt_array("tokenizer.ggml.merges", "strings", |v| v.as_str())?
        .ok_or_else(|| Error::config(path, "tokenizer.ggml.merges", "missing; a byte-level BPE vocabulary needs its merges"))?;
    let types = file.opt_array("tokenizer.ggml.token_type", "integers", |v| v.as_int())?.unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(Error::config(path, "tokenizer.ggml.token_type", format!("{} entries for {} tokens", types.len(), tokens.len())));
    }

    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, &tok) in tokens.iter().enumerate() {
        let spelled = if in_alphabet(tok) { tok.to_string() } else { tok.bytes().map(|b| alphabet[b as usize]).collect() };
        if vocab.insert(spelled.clone(), json!(id)).is_some() {
            return Err(Error::config(path, "tokenizer.ggml.tokens", format!("token `{spelled}` (id {id}) appears twice")));
        }
        // Control tokens outside the byte alphabet are llama.cpp mislabels; transformers skips
        // them, and user-defined ones too (it looks them up in the re-spelled vocabulary).
        let ty = types.get(id).copied().unwrap_or(1);
        let special = ty == 3 && in_alphabet(tok);
        if special || (ty == 4 && in_alphabet(tok)) {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special}));
        }
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let Some((a, b)) = m.split_once(' ') else {
            return Err(Error::config(path, "tokenizer.ggml.merges", format!("merge {i} `{m}` is not two tokens separated by a space")));
        };
        pairs.push(json!([a, b]));
    }

    let special = special_ids(file)?;
    let add = |k: &str| file.opt_bool(&format!("tokenizer.ggml.add_{k}_token"));
    let name = |id: Option<u32>, what: &str| -> Result<Option<(u32, String)>> {
        match id {
            None => Ok(None),
            Some(i) => tokens
                .get(i as usize)
                .map(|t| Some((i, t.to_string())))
                .ok_or_else(|| Error::config(path, format!("tokenizer.ggml.{what}_token_id"), format!("{i} is outside the vocabulary of {}", tokens.len()))),
        }
    };
    let bos = if add("bos")?.unwrap_or(false) { name(special.bos, "bos")? } else { None };
    let eos = if add("eos")?.unwrap_or(false) { name(special.eos, "eos")? } else { None };
    let post = template(bos, eos);

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": pairs
        }
    }))
}

/// A template putting `bos` before and `eos` after each sequence (`null` when neither).
fn template(bos: Option<(u32, String)>, eos: Option<(u32, String)>) -> Json {
    if bos.is_none() && eos.is_none() {
        return Json::Null;
    }
    let piece = |t: &(u32, String)| json!({"SpecialToken": {"id": t.1, "type_id": 0}});
    let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
    let wrap = |id: &str| bos.iter().map(piece).chain([seq(id)]).chain(eos.iter().map(piece)).collect::<Vec<_>>();
    let mut pair = wrap("A");
    pair.extend(wrap("B"));
    let mut specials = serde_json::Map::new();
    for t in bos.iter().chain(eos.iter()) {
        specials.insert(t.1.clone(), json!({"id": t.1, "ids": [t.0], "tokens": [t.1]}));
    }
    json!({"type": "TemplateProcessing", "single": wrap("A"), "pair": pair, "special_tokens": specials})
}
