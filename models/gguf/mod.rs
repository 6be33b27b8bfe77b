//! GGUF files (llama.cpp's model format): header, metadata, and tensors dequantised to f32 or
//! bf16.
//!
//! [`GgufFile::open`] memory-maps the file and parses the header ([`parse`]), checking that every
//! tensor lies inside the file. [`GgufFile::tensor`] returns a tensor in Hugging Face's shape
//! (ggml lists dimensions fastest first, so `[576, 49152]` in the file is `[49152, 576]` here):
//! an F32 tensor (or F16 / BF16 asked for in its own type) reads the mapped file in place, any
//! other type is dequantised ([`dequant`]) into an owned buffer. Rows can be reordered while
//! they are dequantised, which is how llama.cpp's permutation of the Q and K projections is
//! undone ([`unpermute_qk_rows`]).
//!
//! Errors name the file and, for a tensor, the tensor: bad magic, an unsupported version, a
//! truncated header or tensor, an unknown or unsupported type.

pub mod dequant;
pub mod parse;
pub mod tokenizer;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::engine::error::{Error, Result};
use crate::engine::tensor::{DType, Storage, Tensor};

pub use parse::{TensorInfo, Value};
pub use types::GgmlType;

pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    pub version: u32,
    pub alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({}, v{}, {} tensors)", self.path.display(), self.version, self.tensors.len())
    }
}

/// Whether `path` names a GGUF file (by its extension or, for an existing file, its magic).
pub fn is_gguf(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && &magic == b"GGUF"
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
        // SAFETY: read-only map; model files are replaced by renaming, never rewritten in place
        // (see models::weights).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("cannot memory-map", path, e))?;
        let h = parse::parse(path, &map)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            version: h.version,
            alignment: h.alignment,
            data_start: h.data_start,
            metadata: h.metadata,
            tensors: h.tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata entry in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn meta_err(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.path, key, msg)
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            None => Err(self.meta_err(key, "missing; expected a string")),
            Some(v) => v.as_str().ok_or_else(|| self.meta_err(key, format!("expected a string, found {}", v.type_name()))),
        }
    }

    /// An optional non-negative integer of any width.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_int() {
                Some(i) if i >= 0 && i <= usize::MAX as i128 => Ok(Some(i as usize)),
                _ => Err(self.meta_err(key, format!("expected a non-negative integer, found {v:?}"))),
            },
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.meta_err(key, format!("expected a number, found {}", v.type_name()))),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.meta_err(key, format!("expected a bool, found {}", v.type_name()))),
        }
    }

    /// An optional array whose elements all pass `f`.
    pub fn opt_array<'a, T>(&'a self, key: &str, what: &str, f: impl Fn(&'a Value) -> Option<T>) -> Result<Option<Vec<T>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| f(v).ok_or_else(|| self.meta_err(key, format!("element {i} is {}, expected {what}", v.type_name()))))
                .collect::<Result<Vec<T>>>()
                .map(Some),
            Some(v) => Err(self.meta_err(key, format!("expected an array of {what}, found {}", v.type_name()))),
        }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_start + t.offset) as usize;
        &self.map[start..start + t.size as usize]
    }

    /// The tensor `name` in Hugging Face's shape, which must be `shape`, stored as `dtype`.
    pub fn tensor(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.tensor_rows(name, shape, dtype, None)
    }

    /// Like [`GgufFile::tensor`], the output's row `i` (of the first dimension) taken from the
    /// file's row `order[i]`; `order` must be a permutation.
    pub fn tensor_rows(&self, name: &str, shape: &[usize], dtype: DType, order: Option<&[usize]>) -> Result<Tensor> {
        let t = self.info(name).ok_or_else(|| self.missing(name))?;
        let hf: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        if hf != shape {
            return Err(Error::tensor(&self.path, name, format!("expected shape {shape:?}, found {hf:?} (GGUF dims {:?})", t.dims)));
        }
        if !t.ty.supported {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("type {} cannot be dequantised; supported: {}", t.ty.name, types::supported_names()),
            ));
        }
        let cols = t.dims[0] as usize;
        let rows = (t.size as usize / t.ty.block_bytes * t.ty.block_elems).checked_div(cols).unwrap_or(0);
        if let Some(o) = order {
            let mut seen = vec![false; rows];
            if o.len() != rows || o.iter().any(|&r| r >= rows || std::mem::replace(&mut seen[r], true)) {
                return Err(Error::tensor(&self.path, name, format!("row order is not a permutation of its {rows} rows")));
            }
        }
        let in_place = order.is_none()
            && ((t.ty == types::F32 && dtype == DType::F32)
                || (t.ty == types::F16 && dtype == DType::F16)
                || (t.ty == types::BF16 && dtype == DType::BF16));
        if in_place {
            if let Some(x) = Tensor::from_mapped(self.map.clone(), (self.data_start + t.offset) as usize, dtype, shape) {
                return Ok(x);
            }
        }
        let src = self.bytes(t);
        let n = rows * cols;
        let storage = match dtype {
            DType::BF16 => {
                let mut v = vec![half::bf16::ZERO; n];
                dequant::dequantize_rows(t.ty, src, cols, order, dequant::RowsOut::BF16(&mut v));
                Storage::BF16(v)
            }
            DType::F32 | DType::F16 => {
                let mut v = vec![0.0f32; n];
                dequant::dequantize_rows(t.ty, src, cols, order, dequant::RowsOut::F32(&mut v));
                Storage::F32(v)
            }
        };
        let x = Tensor::from_storage(storage, shape);
        Ok(if dtype == DType::F16 { x.to_dtype(DType::F16) } else { x })
    }

    fn missing(&self, name: &str) -> Error {
        let mut close: Vec<&str> = self.tensors.iter().map(|t| t.name.as_str()).filter(|n| n.split('.').next_back() == name.split('.').next_back()).take(3).collect();
        close.sort();
        let hint = if close.is_empty() { String::new() } else { format!("; tensors with the same suffix: {}", close.join(", ")) };
        Error::tensor(&self.path, name, format!("not found among the {} tensors{hint}", self.tensors.len()))
    }
}

/// The row order that undoes llama.cpp's permutation of a Q or K projection of `heads` heads
/// (`convert_hf_to_gguf.py` interleaves the two rotary halves of each head; transformers'
/// `_reverse_permute_weights` undoes it): output row `h*d + s*d/2 + j` is file row
/// `h*d + 2j + s`, for head `h`, half `s` in {0, 1} and `j < d/2`.
pub fn unpermute_qk_rows(rows: usize, heads: usize) -> Option<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return None;
    }
    let d = rows / heads;
    let half = d / 2;
    let mut order = Vec::with_capacity(rows);
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                order.push(h * d + 2 * j + s);
            }
        }
    }
    Some(order)
}
