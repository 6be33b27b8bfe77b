//! Parsing a GGUF header: magic, version, metadata key/values and tensor infos.
//!
//! Layout (little-endian; ggml/docs/gguf.md), versions 2 and 3 (version 1 used 32-bit counts
//! and is long gone):
//!
//! ```text
//! "GGUF" u32 version  u64 tensor_count  u64 kv_count
//! kv_count x { string key, u32 value_type, value }
//! tensor_count x { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
//! padding to `general.alignment` (default 32), then the tensor data
//! ```
//!
//! A string is a u64 byte length and UTF-8 bytes; an array is a u32 element type, a u64 count
//! and the elements. `dims[0]` is the fastest-varying dimension (a row's length). Every read is
//! bounds-checked, and counts are checked against the bytes left before anything is allocated,
//! so a truncated or corrupted header is an error naming what was being read and where, never
//! a panic or a huge allocation.

use std::path::Path;

use crate::engine::error::{Error, Result};

use super::types::GgmlType;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The GGUF name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::F32(_) => "float32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F64(_) => "float64",
        }
    }

    /// An integer value of any width, as i128 (no value of GGUF's integer types is lost).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v as i128,
            Value::I8(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::I32(v) => v as i128,
            Value::U64(v) => v as i128,
            Value::I64(v) => v as i128,
            _ => return None,
        })
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// File offset of the data section.
    pub data_start: u64,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

const MAX_DIMS: u32 = 4;
const MAX_DEPTH: usize = 4;

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.path, msg)
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(self.err(format!(
                "truncated: {} needs {n} bytes at offset {}, but the file ends {left} bytes later ({} bytes in all)",
                what(),
                self.pos,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each take at least `min_bytes`, checked against the bytes left.
    fn count(&mut self, min_bytes: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let n = self.u64(&|| format!("the count of {}", what()))?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes) > left {
            return Err(self.err(format!(
                "{} claims {n} entries at offset {}, more than the {left} bytes left can hold (truncated or corrupted)",
                what(),
                self.pos - 8
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let n = self.count(1, &|| format!("bytes of {}", what()))?;
        let at = self.pos;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|e| self.err(format!("{} at offset {at} is not valid UTF-8: {e}", what())))
    }

    /// A value of type `ty`; `depth` counts nested arrays.
    fn value(&mut self, ty: u32, depth: usize, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{} is a bool of byte value {b} (expected 0 or 1)", what()))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(format!("{} nests arrays more than {MAX_DEPTH} deep", what())));
                }
                let item = self.u32(&|| format!("the element type of {}", what()))?;
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => return Err(self.err(format!("{} has unknown element type {other}", what()))),
                };
                let n = self.count(min, &|| what())?;
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    items.push(self.value(item, depth + 1, &|| format!("element {i} of {}", what()))?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.err(format!("{} has unknown value type {other} (GGUF defines 0..=12)", what()))),
        })
    }
}

/// Parses the header of the GGUF file `bytes` (`path` names it in errors) and checks that every
/// tensor's data lies inside the file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut r = Reader { bytes, pos: 0, path };
    let magic = r.array::<4>(&|| "the magic bytes".into())?;
    if &magic != b"GGUF" {
        return Err(r.err(format!(
            "not a GGUF file: it starts with bytes {:02x?} (\"{}\"), expected \"GGUF\"",
            magic,
            String::from_utf8_lossy(&magic).escape_debug()
        )));
    }
    let version = r.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 { " (a big-endian file; only little-endian files are read)" } else { "" };
        return Err(r.err(format!("GGUF version {version} is not supported (versions 2 and 3 are){hint}")));
    }
    // A tensor info takes at least 8 + 4 + 4 + 8 bytes; a key/value at least 8 + 4 + 1.
    let n_tensors = r.count(24, &|| "the tensor table".into())?;
    let n_kv = r.count(13, &|| "the metadata table".into())?;
    let mut metadata = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = r.string(&|| format!("the key of metadata entry {i}"))?;
        let what = || format!("metadata `{key}`");
        let ty = r.u32(&|| format!("the value type of {}", what()))?;
        let v = r.value(ty, 0, &what)?;
        metadata.push((key, v));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => 32,
        Some((_, v)) => match v.as_int() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 20 => a as u64,
            _ => return Err(r.err(format!("metadata `general.alignment` must be a power of two, found {v:?}"))),
        },
    };
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = r.string(&|| format!("the name of tensor {i}"))?;
        let what = || format!("tensor `{name}`");
        let n_dims = r.u32(&|| format!("the rank of {}", what()))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.err(format!("{} has {n_dims} dimensions (1 to {MAX_DIMS} expected)", what())));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(r.u64(&|| format!("dimension {d} of {}", what()))?);
        }
        let id = r.u32(&|| format!("the type of {}", what()))?;
        let ty = GgmlType::from_id(id).ok_or_else(|| {
            Error::tensor(path, &name, format!("unknown ggml type id {id}; this file may need a newer reader"))
        })?;
        let offset = r.u64(&|| format!("the data offset of {}", what()))?;
        let elems = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let size = elems.and_then(|e| ty.bytes_for(e)).ok_or_else(|| {
            Error::tensor(path, &name, format!("dimensions {dims:?} do not fit type {} (rows must be whole blocks of {} values)", ty.name, ty.block_elems))
        })?;
        if offset % alignment != 0 {
            return Err(Error::tensor(path, &name, format!("data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        if tensors.iter().any(|t| t.name == name) {
            return Err(Error::tensor(path, &name, "appears twice in the tensor table"));
        }
        tensors.push(TensorInfo { name, dims, ty, offset, size });
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let len = bytes.len() as u64;
    for t in &tensors {
        let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.size));
        if end.is_none_or(|e| e > len) {
            return Err(Error::tensor(
                path,
                &t.name,
                format!(
                    "data out of bounds: {} bytes at file offset {} (data section {data_start} + {}), but the file has {len} bytes (truncated?)",
                    t.size,
                    data_start.saturating_add(t.offset),
                    t.offset
                ),
            ));
        }
    }
    Ok(Header { version, metadata, tensors, alignment, data_start })
}
