//! Writing safetensors files, atomically.
//!
//! The layout is the one the `safetensors` library itself writes (and so Python's
//! `safetensors.numpy.save_file`): tensors sorted by dtype alignment (largest first) then by
//! name, the JSON header padded with spaces to a multiple of 8 bytes. Metadata keys are written
//! in sorted order, so the same tensors always give the same bytes (the library keeps metadata
//! in a hash map, whose order varies from run to run). The importer relies on this to produce
//! files byte-identical to the reference converter's.
//!
//! The file appears under its final name only when complete: it is written to a temporary file
//! in the same directory, flushed to disk, and renamed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};

use crate::engine::error::{Error, Result};
use crate::engine::tensor::{numel, Tensor, View};

// Elements are written as their in-memory bytes; safetensors is little-endian.
const _: () = assert!(cfg!(target_endian = "little"), "safetensors writing assumes a little-endian host");

/// The elements of one tensor to write, borrowed or owned.
pub enum TensorValues<'a> {
    F32(Cow<'a, [f32]>),
    BF16(Cow<'a, [bf16]>),
    F16(Cow<'a, [f16]>),
    I64(Cow<'a, [i64]>),
}

impl TensorValues<'_> {
    fn len(&self) -> usize {
        match self {
            TensorValues::F32(v) => v.len(),
            TensorValues::BF16(v) => v.len(),
            TensorValues::F16(v) => v.len(),
            TensorValues::I64(v) => v.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            TensorValues::F32(v) => bytemuck::cast_slice(v),
            TensorValues::BF16(v) => bytemuck::cast_slice(v),
            TensorValues::F16(v) => bytemuck::cast_slice(v),
            TensorValues::I64(v) => bytemuck::cast_slice(v),
        }
    }

    /// Name in the header, and rank in the `safetensors` crate's dtype order (which sorts
    /// tensors by descending alignment).
    fn dtype(&self) -> (&'static str, u8) {
        match self {
            TensorValues::I64(_) => ("I64", 3),
            TensorValues::F32(_) => ("F32", 2),
            TensorValues::BF16(_) => ("BF16", 1),
            TensorValues::F16(_) => ("F16", 0),
        }
    }
}

/// One tensor to write: a shape and its elements.
pub struct TensorData<'a> {
    pub shape: Vec<usize>,
    pub values: TensorValues<'a>,
}

impl<'a> TensorData<'a> {
    pub fn f32(values: impl Into<Cow<'a, [f32]>>, shape: &[usize]) -> Self {
        TensorData { shape: shape.to_vec(), values: TensorValues::F32(values.into()) }
    }

    pub fn i64(values: impl Into<Cow<'a, [i64]>>, shape: &[usize]) -> Self {
        TensorData { shape: shape.to_vec(), values: TensorValues::I64(values.into()) }
    }

    /// Borrows a tensor's elements in their stored dtype.
    pub fn from_tensor(t: &'a Tensor) -> Self {
        let values = match t.view() {
            View::F32(s) => TensorValues::F32(Cow::Borrowed(s)),
            View::BF16(s) => TensorValues::BF16(Cow::Borrowed(s)),
            View::F16(s) => TensorValues::F16(Cow::Borrowed(s)),
        };
        TensorData { shape: t.shape().to_vec(), values }
    }
}

/// Writes `tensors` and string `metadata` (the header's `__metadata__`, omitted when empty)
/// to the safetensors file `path`, replacing it atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, TensorData)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut seen = HashSet::new();
    for (name, t) in tensors {
        if name.is_empty() || name == "__metadata__" {
            return Err(Error::tensor(path, name, "this name cannot be used for a tensor"));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::tensor(path, name, "given twice"));
        }
        if t.values.len() != numel(&t.shape) {
            return Err(Error::tensor(
                path,
                name,
                format!("{} values cannot have shape {:?}", t.values.len(), t.shape),
            ));
        }
    }
    let mut order: Vec<&(String, TensorData)> = tensors.iter().collect();
    order.sort_by(|(a, ta), (b, tb)| tb.values.dtype().1.cmp(&ta.values.dtype().1).then(a.cmp(b)));
    let header = header_bytes(&order, metadata);

    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io("cannot write", &tmp, e);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        for (_, t) in &order {
            out.write_all(t.values.bytes()).map_err(io)?;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot rename into place", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path.parent());
    Ok(())
}

/// The JSON header, padded to a multiple of 8 bytes, with tensors in `order`.
fn header_bytes(order: &[&(String, TensorData)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut h = String::from("{");
    if !metadata.is_empty() {
        h.push_str("\"__metadata__\":{");
        let items: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json(k), json(v))).collect();
        h.push_str(&items.join(","));
        h.push('}');
    }
    let mut offset = 0usize;
    for (name, t) in order {
        let end = offset + t.values.bytes().len();
        if h.len() > 1 {
            h.push(',');
        }
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        h.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(name),
            t.values.dtype().0,
            shape.join(",")
        ));
        offset = end;
    }
    h.push('}');
    let mut bytes = h.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

/// A name in the same directory as `path`, unique within this process and among processes.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// then the directory synced. A reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        file.write_all(bytes).map_err(|e| Error::io("cannot write", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot rename into place", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path.parent());
    Ok(())
}

/// Makes a rename in `dir` durable. Best effort: not every filesystem lets a directory be
/// opened and synced, and the data itself is already on disk.
pub fn sync_dir(dir: Option<&Path>) {
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
