//! Tokenisation with a model's `tokenizer.json` (the `tokenizers` crate, the same code Hugging
//! Face's fast tokenizers run), into padded batches.
//!
//! The tokenizer's own padding and truncation settings are switched off: batches are padded on
//! the right to their longest line with the model's padding token, and a line longer than the
//! model accepts is an error naming it (silently truncating would change the results).

use std::path::{Path, PathBuf};

use crate::engine::error::{Error, Result};

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pad_id: u32,
}

/// A padded batch: row-major `[batch, len]` arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedBatch {
    pub batch: usize,
    pub len: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// 1.0 for a real token, 0.0 for padding.
    pub mask: Vec<f32>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

/// The real tokens of a padded batch, packed one sequence after another (no padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Packing {
    /// Sequence `b` is packed rows `offsets[b]..offsets[b+1]`.
    pub offsets: Vec<usize>,
    /// For each packed row, its index `b * len + t` in the padded batch.
    pub rows: Vec<usize>,
    /// Rows of the padded batch (`batch * len`).
    pub padded_rows: usize,
}

impl EncodedBatch {
    /// Pads tokenised sequences (ids and type ids) on the right into a batch.
    pub fn from_sequences(seqs: &[(&[u32], &[u32])], pad_id: u32) -> EncodedBatch {
        let (batch, len) = (seqs.len(), seqs.iter().map(|s| s.0.len()).max().unwrap_or(0));
        let mut ids = vec![pad_id; batch * len];
        let mut type_ids = vec![0u32; batch * len];
        let mut mask = vec![0.0f32; batch * len];
        for (r, (i, t)) in seqs.iter().enumerate() {
            ids[r * len..r * len + i.len()].copy_from_slice(i);
            type_ids[r * len..r * len + t.len()].copy_from_slice(t);
            mask[r * len..r * len + i.len()].fill(1.0);
        }
        let lengths = seqs.iter().map(|s| s.0.len()).collect();
        EncodedBatch { batch, len, ids, type_ids, mask, lengths }
    }

    /// Where the real tokens go when packed. Real tokens need not be contiguous (any 0/1 mask).
    pub fn packing(&self) -> Packing {
        let mut offsets = vec![0];
        let mut rows = Vec::new();
        for b in 0..self.batch {
            for t in 0..self.len {
                if self.mask[b * self.len + t] != 0.0 {
                    rows.push(b * self.len + t);
                }
            }
            offsets.push(rows.len());
        }
        Packing { offsets, rows, padded_rows: self.batch * self.len }
    }

    /// A batch from explicit rows (all the same length), e.g. ids given by a test fixture.
    pub fn from_rows(ids: Vec<u32>, type_ids: Vec<u32>, mask: Vec<f32>, batch: usize, len: usize) -> Result<EncodedBatch> {
        if ids.len() != batch * len || type_ids.len() != batch * len || mask.len() != batch * len {
            return Err(Error::shape("batch", format!("ids, type ids and mask must all have {batch} x {len} entries")));
        }
        let lengths = mask.chunks(len.max(1)).take(batch).map(|r| r.iter().filter(|&&m| m != 0.0).count()).collect();
        Ok(EncodedBatch { batch, len, ids, type_ids, mask, lengths })
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; `pad_fallback` is used when neither the file nor the model
    /// directory names a padding token (e.g. the model config's `pad_token_id`).
    pub fn from_file(path: &Path, pad_fallback: Option<u32>) -> Result<TextTokenizer> {
        if !path.exists() {
            return Err(Error::io("cannot open", path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        }
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::tokenizer(path, format!("not a valid tokenizer.json: {e}")))?;
        let pad_id = find_pad_id(&inner, path)
            .or(pad_fallback)
            .ok_or_else(|| Error::tokenizer(path, "no padding token: none in tokenizer.json, special_tokens_map.json or tokenizer_config.json, and none of [PAD], <pad>"))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(path, format!("cannot switch truncation off: {e}")))?;
        Ok(TextTokenizer { inner, path: path.to_path_buf(), pad_id })
    }

    /// A tokenizer built in memory (e.g. from a GGUF file's vocabulary); `path` names its
    /// source in errors.
    pub fn from_tokenizer(mut inner: tokenizers::Tokenizer, path: &Path, pad_id: u32) -> Result<TextTokenizer> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(path, format!("cannot switch truncation off: {e}")))?;
        Ok(TextTokenizer { inner, path: path.to_path_buf(), pad_id })
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The ids of one text, with the model's special tokens when `add_special`.
    pub fn encode_ids(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let e = self.inner.encode(text, add_special).map_err(|e| Error::tokenizer(&self.path, format!("cannot tokenise: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens left out when `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::tokenizer(&self.path, format!("cannot decode: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokenises each text with the model's special tokens and pads the batch. A text of more
    /// than `max_len` tokens is an error naming its index (1-based, as a line number).
    pub fn encode_batch(&self, texts: &[String], max_len: usize) -> Result<EncodedBatch> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::tokenizer(&self.path, format!("cannot tokenise: {e}")))?;
        let lengths: Vec<usize> = encs.iter().map(|e| e.get_ids().len()).collect();
        if let Some((i, &n)) = lengths.iter().enumerate().find(|(_, &n)| n > max_len) {
            return Err(Error::Usage(format!(
                "text {} has {n} tokens; the model takes at most {max_len}",
                i + 1
            )));
        }
        let (batch, len) = (encs.len(), lengths.iter().copied().max().unwrap_or(0));
        let mut ids = vec![self.pad_id; batch * len];
        let mut type_ids = vec![0u32; batch * len];
        let mut mask = vec![0.0f32; batch * len];
        for (r, e) in encs.iter().enumerate() {
            let n = e.get_ids().len();
            ids[r * len..r * len + n].copy_from_slice(e.get_ids());
            type_ids[r * len..r * len + n].copy_from_slice(e.get_type_ids());
            mask[r * len..r * len + n].fill(1.0);
        }
        Ok(EncodedBatch { batch, len, ids, type_ids, mask, lengths })
    }
}

/// One tokenised sequence (or pair): ids and type ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl TextTokenizer {
    /// Tokenises texts (`second` given: sentence pairs) with the model's special tokens, cut to
    /// at most `max_len` tokens the way transformers' `truncation=True` does (longest first for
    /// pairs), keeping the special tokens.
    pub fn encode_truncated(&self, first: &[String], second: Option<&[String]>, max_len: usize) -> Result<Vec<Tokens>> {
        let mut inner = self.inner.clone();
        let params = tokenizers::TruncationParams { max_length: max_len, ..Default::default() };
        inner.with_truncation(Some(params)).map_err(|e| Error::tokenizer(&self.path, format!("cannot truncate to {max_len}: {e}")))?;
        let inputs: Vec<tokenizers::EncodeInput> = match second {
            None => first.iter().map(|t| tokenizers::EncodeInput::Single(t.as_str().into())).collect(),
            Some(s) => {
                if s.len() != first.len() {
                    return Err(Error::shape("encode_truncated", format!("{} first and {} second texts", first.len(), s.len())));
                }
                first.iter().zip(s).map(|(a, b)| tokenizers::EncodeInput::Dual(a.as_str().into(), b.as_str().into())).collect()
            }
        };
        let encs = inner.encode_batch(inputs, true).map_err(|e| Error::tokenizer(&self.path, format!("cannot tokenise: {e}")))?;
        Ok(encs.into_iter().map(|e| Tokens { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec() }).collect())
    }
}

/// A tokenised text and the characters of the text each token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharTokens {
    pub tokens: Tokens,
    /// Per token: characters `start..end` of the text, `None` for a special token.
    pub chars: Vec<Option<(usize, usize)>>,
}

impl TextTokenizer {
    /// Tokenises single texts with the model's special tokens, cut to at most `max_len` tokens
    /// (as [`TextTokenizer::encode_truncated`]), with each token's character span (the
    /// tokenizer's byte offsets turned into characters).
    pub fn encode_with_chars(&self, texts: &[String], max_len: usize) -> Result<Vec<CharTokens>> {
        let mut inner = self.inner.clone();
        let params = tokenizers::TruncationParams { max_length: max_len, ..Default::default() };
        inner.with_truncation(Some(params)).map_err(|e| Error::tokenizer(&self.path, format!("cannot truncate to {max_len}: {e}")))?;
        let encs = inner.encode_batch(texts.to_vec(), true).map_err(|e| Error::tokenizer(&self.path, format!("cannot tokenise: {e}")))?;
        Ok(encs
            .iter()
            .zip(texts)
            .map(|(e, text)| {
                let to_chars = ByteToChar::new(text);
                let chars = e.get_offsets().iter().zip(e.get_special_tokens_mask()).map(|(&(b0, b1), &sp)| (sp == 0).then(|| to_chars.span(b0, b1))).collect();
                CharTokens { tokens: Tokens { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec() }, chars }
            })
            .collect())
    }
}

/// One window of a (question, context) pair: the model's special tokens around the whole
/// question and a contiguous slice of the context's tokens, as the tokenizer's post-processor
/// lays them out (`[CLS] q [SEP] c [SEP]` for BERT, `<s> q </s></s> c </s>` for XLM-R).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairWindow {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// For each token: `Some((start, end))`, the characters `start..end` of the context it
    /// comes from, for a context token; `None` for question and special tokens.
    pub context_chars: Vec<Option<(usize, usize)>>,
    /// 1 for a special token added by the post-processor.
    pub special: Vec<u32>,
}

impl TextTokenizer {
    /// Tokenises `question` with `context` as a pair, cutting the context (never the question)
    /// into windows of at most `max_len` tokens in all, consecutive windows sharing `stride`
    /// context tokens: what Hugging Face's tokenizers do with `truncation="only_second"`,
    /// `stride` and `return_overflowing_tokens=True`, through the same `Encoding::truncate`,
    /// then each window through the tokenizer's own post-processor (so special tokens and type
    /// ids are the model's). A context that fits gives one window.
    ///
    /// The crate's offsets are bytes of the input; they are returned as characters, the unit
    /// of SQuAD's `answer_start`.
    pub fn encode_pair_windows(&self, question: &str, context: &str, max_len: usize, stride: usize) -> Result<Vec<PairWindow>> {
        let tok_err = |e| Error::tokenizer(&self.path, format!("cannot tokenise: {e}"));
        let q = self.inner.encode(question, false).map_err(tok_err)?;
        let mut c = self.inner.encode(context, false).map_err(tok_err)?;
        let added = self.inner.get_post_processor().map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, true));
        let budget = max_len.checked_sub(q.len() + added).filter(|&b| b > 0).ok_or_else(|| {
            Error::Usage(format!(
                "the question has {} tokens, which with {added} special tokens leaves no room for the context in {max_len}",
                q.len()
            ))
        })?;
        if c.len() > budget {
            // `Encoding::truncate` asserts this; HF raises. Say which numbers to change.
            if stride >= budget {
                return Err(Error::Usage(format!(
                    "document stride {stride} must be less than the {budget} context tokens a window holds \
                     ({max_len} - {} question tokens - {added} special tokens)",
                    q.len()
                )));
            }
            c.truncate(budget, stride, tokenizers::TruncationDirection::Right);
        }
        let rest = c.take_overflowing();
        let to_chars = ByteToChar::new(context);
        std::iter::once(c)
            .chain(rest)
            .map(|part| {
                let e = self.inner.post_process(q.clone(), Some(part), true).map_err(tok_err)?;
                let context_chars = e
                    .get_sequence_ids()
                    .iter()
                    .zip(e.get_offsets())
                    .zip(e.get_special_tokens_mask())
                    .map(|((seq, &(b0, b1)), &sp)| (*seq == Some(1) && sp == 0).then(|| to_chars.span(b0, b1)))
                    .collect();
                Ok(PairWindow {
                    ids: e.get_ids().to_vec(),
                    type_ids: e.get_type_ids().to_vec(),
                    context_chars,
                    special: e.get_special_tokens_mask().to_vec(),
                })
            })
            .collect()
    }
}

/// Byte offsets of a string to character offsets.
struct ByteToChar {
    /// `chars[b]`: the index of the character that byte `b` belongs to; `chars[len]` = the
    /// number of characters.
    chars: Vec<usize>,
}

impl ByteToChar {
    fn new(s: &str) -> ByteToChar {
        let mut chars = Vec::with_capacity(s.len() + 1);
        for (i, ch) in s.chars().enumerate() {
            chars.extend(std::iter::repeat_n(i, ch.len_utf8()));
        }
        chars.push(chars.last().map_or(0, |&i| i + 1));
        ByteToChar { chars }
    }

    /// The characters covering bytes `b0..b1`: from the character holding byte `b0` to the
    /// one holding byte `b1 - 1`, inclusive. Tokenizers report character boundaries; this
    /// rounds outwards should one not be.
    fn span(&self, b0: usize, b1: usize) -> (usize, usize) {
        let bytes = self.chars.len() - 1;
        let (b0, b1) = (b0.min(bytes), b1.min(bytes));
        let start = self.chars[b0];
        let end = if b1 > b0 { self.chars[b1 - 1] + 1 } else { start };
        (start, end)
    }
}

#[cfg(test)]
mod byte_to_char_tests {
    use super::ByteToChar;

    #[test]
    fn multibyte_spans() {
        // a (1 byte) ह (3) 中 (3) 𝄞 (4) z (1)
        let m = ByteToChar::new("aह中𝄞z");
        assert_eq!(m.span(0, 1), (0, 1));
        assert_eq!(m.span(1, 4), (1, 2));
        assert_eq!(m.span(4, 11), (2, 4));
        assert_eq!(m.span(11, 12), (4, 5));
        assert_eq!(m.span(12, 12), (5, 5));
        // Inside a character: rounded outwards.
        assert_eq!(m.span(2, 5), (1, 3));
        assert_eq!(ByteToChar::new("").span(0, 0), (0, 0));
    }
}

/// The padding token: the tokenizer's padding settings, else the `pad_token` of the
/// transformers files next to it, else a conventional name.
fn find_pad_id(tok: &tokenizers::Tokenizer, path: &Path) -> Option<u32> {
    if let Some(p) = tok.get_padding() {
        return Some(p.pad_id);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else { continue };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let name = match &json["pad_token"] {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()),
            _ => None,
        };
        if let Some(id) = name.and_then(|n| tok.token_to_id(n)) {
            return Some(id);
        }
    }
    ["[PAD]", "<pad>"].iter().find_map(|n| tok.token_to_id(n))
}
