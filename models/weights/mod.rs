//! The weights of a Hugging Face model directory, memory-mapped.
//!
//! [`Weights::open`] maps `model.safetensors`, or every shard listed in
//! `model.safetensors.index.json`, and validates each header once. [`Weights::get`] then returns
//! a tensor that reads the mapped file in place (no copy, no load time: pages are read on first
//! touch); only a tensor whose data is not aligned to its element size is copied.
//!
//! Name prefixes: a checkpoint of `BertModel` names its tensors `embeddings.…`, one of
//! `BertForMaskedLM` / `XLMRobertaForSequenceClassification` / … names the same tensors
//! `bert.embeddings.…` / `roberta.embeddings.…`, and decoder checkpoints use `model.…`.
//! [`Weights::open`] detects which of these prefixes the file uses (the one most tensor names
//! start with) and [`Weights::get_any`] accepts names with or without it, so model code can ask
//! for `embeddings.word_embeddings.weight` whatever head the checkpoint was saved with.
//!
//! Memory-mapped files must not be truncated while mapped (reading a vanished page is a
//! SIGBUS); the writers in this crate replace files by renaming, never in place.

mod header;
mod write;

pub(crate) use write::temp_path;
pub use write::{sync_dir, write_atomic, write_safetensors, TensorData, TensorValues};

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::Dtype;
use serde_json::Value;

use crate::engine::error::{Error, Result};
use crate::engine::tensor::{numel, DType, Storage, Tensor};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Prefixes that task-head checkpoints put before the backbone's tensor names.
pub const MODEL_PREFIXES: [&str; 3] = ["bert.", "roberta.", "model."];

struct MappedFile {
    path: PathBuf,
    map: Arc<Mmap>,
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the mapped file.
    start: usize,
    end: usize,
}

/// Where and what one tensor is, for callers that need more than a float tensor (integer
/// tensors such as `input_ids`, or a summary of the file).
pub struct TensorInfo<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    /// The tensor's bytes (little-endian, row-major).
    pub bytes: &'a [u8],
    pub file: &'a Path,
}

pub struct Weights {
    /// `model.safetensors` or the index file: what errors about the whole set name.
    source: PathBuf,
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
    prefix: &'static str,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Weights({}, {} tensors, prefix {:?})",
            self.source.display(),
            self.entries.len(),
            self.prefix
        )
    }
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    // SAFETY: the map is read-only and the crate never writes model files in place (see the
    // module comment); another process truncating the file would be a user error we cannot
    // guard against with mmap.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io("cannot memory-map", path, e))
}

impl Weights {
    /// Opens the weights of the model directory `dir`.
    pub fn open(dir: &Path) -> Result<Weights> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            Weights::open_file(&single)
        } else if index.is_file() {
            Weights::open_index(&index)
        } else {
            Err(Error::format(
                dir,
                format!("no weights: neither {SINGLE_FILE} nor {INDEX_FILE} is in this directory"),
            ))
        }
    }

    /// Opens one safetensors file.
    pub fn open_file(path: &Path) -> Result<Weights> {
        let mut w =
            Weights { source: path.to_path_buf(), files: Vec::new(), entries: HashMap::new(), prefix: "" };
        for (name, entry) in w.add_file(path)? {
            w.entries.insert(name, entry);
        }
        w.prefix = detect_prefix(w.entries.keys().map(String::as_str));
        Ok(w)
    }

    /// Opens the shards listed in a `model.safetensors.index.json`.
    pub fn open_index(index: &Path) -> Result<Weights> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io("cannot read", index, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(index, format!("not valid JSON: {e}")))?;
        let Some(weight_map) = value.get("weight_map").and_then(Value::as_object) else {
            return Err(Error::format(index, "no `weight_map` object (tensor name -> shard file)"));
        };
        let mut wanted: Vec<(String, String)> = Vec::with_capacity(weight_map.len());
        for (name, shard) in weight_map {
            let Some(shard) = shard.as_str() else {
                return Err(Error::tensor(index, name, "its `weight_map` entry is not a file name string"));
            };
            wanted.push((name.clone(), shard.to_string()));
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut w =
            Weights { source: index.to_path_buf(), files: Vec::new(), entries: HashMap::new(), prefix: "" };
        let shards: BTreeSet<&str> = wanted.iter().map(|(_, s)| s.as_str()).collect();
        for shard in shards {
            if shard.is_empty() || shard.contains('/') || shard.contains('\\') || shard == ".." {
                return Err(Error::format(
                    index,
                    format!("shard `{shard}` is not a plain file name in the model directory"),
                ));
            }
            let path = dir.join(shard);
            if !path.is_file() {
                let example = wanted.iter().find(|(_, s)| s == shard).map(|(n, _)| n.as_str()).unwrap_or("");
                return Err(Error::format(
                    index,
                    format!(
                        "shard `{shard}` (which should hold `{example}`) is missing from {}",
                        dir.display()
                    ),
                ));
            }
            let mut in_shard: HashMap<String, Entry> = w.add_file(&path)?.into_iter().collect();
            for (name, _) in wanted.iter().filter(|(_, s)| s == shard) {
                let Some(entry) = in_shard.remove(name) else {
                    return Err(Error::tensor(
                        index,
                        name,
                        format!("listed in shard `{shard}`, which does not contain it"),
                    ));
                };
                w.entries.insert(name.clone(), entry);
            }
        }
        w.prefix = detect_prefix(w.entries.keys().map(String::as_str));
        Ok(w)
    }

    fn add_file(&mut self, path: &Path) -> Result<Vec<(String, Entry)>> {
        let map = map_file(path)?;
        let header = header::parse(path, &map)?;
        let file = self.files.len();
        self.files.push(MappedFile { path: path.to_path_buf(), map: Arc::new(map) });
        let entries = header
            .tensors
            .into_iter()
            .map(|(name, info)| {
                let (s, e) = info.data_offsets;
                let entry = Entry {
                    file,
                    dtype: info.dtype,
                    shape: info.shape,
                    start: header.data_start + s,
                    end: header.data_start + e,
                };
                (name, entry)
            })
            .collect();
        Ok(entries)
    }

    /// The prefix detected at open time (`"bert."`, `"roberta."`, `"model."` or `""`).
    pub fn prefix(&self) -> &str {
        self.prefix
    }

    /// `model.safetensors` or the index file.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every tensor name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn info(&self, name: &str) -> Option<TensorInfo<'_>> {
        let e = self.entries.get(name)?;
        let f = &self.files[e.file];
        Some(TensorInfo { dtype: e.dtype, shape: &e.shape, bytes: &f.map[e.start..e.end], file: &f.path })
    }

    /// The tensor `name` (exact name), which must have `shape` and a float dtype (F32, BF16 or
    /// F16). Reads the mapped file in place unless the data is misaligned.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(e) = self.entries.get(name) else {
            return Err(self.missing(name, &[name]));
        };
        let file = &self.files[e.file];
        if e.shape != shape {
            return Err(Error::tensor(
                &file.path,
                name,
                format!("expected shape {shape:?}, found {:?}", e.shape),
            ));
        }
        let dtype = match e.dtype {
            Dtype::F32 => DType::F32,
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            other => {
                return Err(Error::tensor(
                    &file.path,
                    name,
                    format!("dtype {other} is not supported for a weight; accepted: F32, BF16, F16"),
                ))
            }
        };
        if let Some(t) = Tensor::from_mapped(file.map.clone(), e.start, dtype, shape) {
            return Ok(t);
        }
        // Misaligned (possible after an odd-sized tensor or header): copy byte-wise.
        let bytes = &file.map[e.start..e.end];
        debug_assert_eq!(bytes.len(), numel(shape) * dtype.size());
        let storage = match dtype {
            DType::F32 => Storage::F32(bytemuck::pod_collect_to_vec::<u8, f32>(bytes)),
            DType::BF16 => Storage::BF16(bytemuck::pod_collect_to_vec::<u8, bf16>(bytes)),
            DType::F16 => Storage::F16(bytemuck::pod_collect_to_vec::<u8, f16>(bytes)),
        };
        Ok(Tensor::from_storage(storage, shape))
    }

    /// Like [`Weights::get`], converted to `dtype` (a copy when the stored dtype differs).
    pub fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(self.get(name, shape)?.to_dtype(dtype))
    }

    /// The name under which `name` is stored: `name` itself, or `name` with the detected
    /// prefix added, or with a known prefix removed (and the detected one added).
    pub fn resolve(&self, name: &str) -> Option<&str> {
        self.candidates(name)
            .into_iter()
            .find_map(|c| self.entries.get_key_value(&c).map(|(k, _)| k.as_str()))
    }

    fn candidates(&self, name: &str) -> Vec<String> {
        let mut out = vec![name.to_string()];
        let stripped = MODEL_PREFIXES.iter().find_map(|p| name.strip_prefix(p));
        for base in std::iter::once(name).chain(stripped) {
            for c in [base.to_string(), format!("{}{base}", self.prefix)] {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// [`Weights::get`] under whichever name [`Weights::resolve`] finds.
    pub fn get_any(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self.resolve(name) {
            Some(stored) => self.get(stored, shape),
            None => {
                let tried = self.candidates(name);
                let tried: Vec<&str> = tried.iter().map(String::as_str).collect();
                Err(self.missing(name, &tried))
            }
        }
    }

    fn missing(&self, name: &str, tried: &[&str]) -> Error {
        let mut msg = format!("not found among the {} tensors", self.entries.len());
        if tried.len() > 1 {
            msg.push_str(&format!(
                " (tried {})",
                tried.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        let close = closest(name, self.names());
        if !close.is_empty() {
            msg.push_str(&format!("; closest names: {}", close.join(", ")));
        }
        Error::tensor(&self.source, name, msg)
    }
}

/// The prefix of [`MODEL_PREFIXES`] that most names start with, or `""`.
fn detect_prefix<'a>(names: impl Iterator<Item = &'a str>) -> &'static str {
    let mut counts = [0usize; MODEL_PREFIXES.len()];
    for n in names {
        for (c, p) in counts.iter_mut().zip(MODEL_PREFIXES) {
            *c += n.starts_with(p) as usize;
        }
    }
    let (best, &count) = counts.iter().enumerate().max_by_key(|(_, c)| **c).expect("non-empty");
    if count > 0 {
        MODEL_PREFIXES[best]
    } else {
        ""
    }
}

/// Up to three names sharing the most leading plus trailing characters with `name`.
fn closest<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let score = |other: &str| {
        let pre = name.bytes().zip(other.bytes()).take_while(|(a, b)| a == b).count();
        let suf = name.bytes().rev().zip(other.bytes().rev()).take_while(|(a, b)| a == b).count();
        (pre + suf).min(name.len().max(other.len()))
    };
    let mut scored: Vec<(usize, &str)> = names.map(|n| (score(n), n)).filter(|(s, _)| *s > 0).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, n)| format!("`{n}`")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_the_most_common_known_one() {
        let names = ["bert.embeddings.a", "bert.encoder.b", "cls.predictions.bias"];
        assert_eq!(detect_prefix(names.into_iter()), "bert.");
        assert_eq!(detect_prefix(["embeddings.a", "encoder.b"].into_iter()), "");
    }

    #[test]
    fn closest_prefers_shared_prefix_and_suffix() {
        let names = [
            "encoder.layer.0.attention.self.query.weight",
            "embeddings.word_embeddings.weight",
            "pooler.dense.bias",
        ];
        let c = closest("encoder.layer.0.attention.self.qeury.weight", names.into_iter());
        assert_eq!(c[0], "`encoder.layer.0.attention.self.query.weight`");
    }
}
