//! Reading and validating a safetensors header, with errors a user can act on.
//!
//! Validation itself is the `safetensors` crate's (`SafeTensors::read_metadata`: header length,
//! JSON, contiguous offsets, byte lengths that match shape x dtype, data that ends exactly at
//! the end of the file). Its errors say *what* is wrong but not where or by how much, so when it
//! refuses a file this module re-reads the header leniently to say which tensor and how many
//! bytes ("truncated: header says 90.9 MB of tensor data, file has 40.0 MB").

use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::{Map, Value};

use crate::engine::error::{Error, Result};

/// The crate refuses headers above this size; checked first so the message can say so.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A parsed header: where tensor data starts in the file, and each tensor's description.
pub(super) struct Header {
    pub data_start: usize,
    pub tensors: Vec<(String, TensorInfo)>,
}

/// `1234567` -> `"1.2 MB (1234567 bytes)"`; small sizes are printed as bytes only.
pub(super) fn human_bytes(n: usize) -> String {
    if n < 10_000 {
        format!("{n} bytes")
    } else if n < 10_000_000 {
        format!("{:.1} KB ({n} bytes)", n as f64 / 1e3)
    } else {
        format!("{:.1} MB ({n} bytes)", n as f64 / 1e6)
    }
}

pub(super) fn parse(path: &Path, file: &[u8]) -> Result<Header> {
    let len = file.len();
    if len < 8 {
        return Err(Error::format(
            path,
            format!("truncated: the file has {len} bytes, fewer than the 8-byte header length that starts a safetensors file"),
        ));
    }
    let header_len = u64::from_le_bytes(file[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!("the header length field says {header_len} bytes (the limit is 100 MB): not a safetensors file, or a corrupted one"),
        ));
    }
    let header_len = header_len as usize;
    if 8 + header_len > len {
        return Err(Error::format(
            path,
            format!(
                "truncated: the header length field says {}, the file has only {} after it",
                human_bytes(header_len),
                human_bytes(len - 8)
            ),
        ));
    }
    match SafeTensors::read_metadata(file) {
        Ok((n, metadata)) => Ok(Header { data_start: 8 + n, tensors: sorted_tensors(&metadata) }),
        Err(e) => Err(explain(path, &file[8..8 + header_len], len - 8 - header_len, e)),
    }
}

fn sorted_tensors(metadata: &Metadata) -> Vec<(String, TensorInfo)> {
    let mut tensors: Vec<(String, TensorInfo)> =
        metadata.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect();
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    tensors
}

/// Turns the crate's error into one that names the file, and the tensor where it can.
fn explain(path: &Path, header: &[u8], data_len: usize, e: SafeTensorError) -> Error {
    use SafeTensorError as E;
    match e {
        E::InvalidHeader(u) => Error::format(path, format!("the header is not UTF-8 text ({u}): corrupted")),
        E::InvalidHeaderDeserialization(j) | E::JsonError(j) => {
            Error::format(path, format!("the header is not a valid safetensors JSON header: {j}"))
        }
        E::MetadataIncompleteBuffer => {
            let declared = lenient(header).iter().map(|t| t.end).max().unwrap_or(0);
            if declared > data_len {
                Error::format(
                    path,
                    format!(
                        "truncated: the header says {} of tensor data, the file has {}",
                        human_bytes(declared),
                        human_bytes(data_len)
                    ),
                )
            } else {
                Error::format(
                    path,
                    format!(
                        "the file has {} after the last tensor's data (the header describes {}): corrupted",
                        human_bytes(data_len - declared),
                        human_bytes(declared)
                    ),
                )
            }
        }
        E::InvalidOffset(name) => Error::tensor(
            path,
            name,
            "its data offsets do not start where the previous tensor's data ends (overlap or gap)",
        ),
        E::TensorInvalidInfo => match lenient(header).into_iter().find(|t| t.size_mismatch()) {
            Some(t) => Error::tensor(
                path,
                t.name.clone(),
                format!(
                    "{} x shape {:?} needs {} bytes, its data offsets span {}",
                    t.dtype.map(|d| d.to_string()).unwrap_or_default(),
                    t.shape,
                    t.needed().unwrap_or(0),
                    t.end.saturating_sub(t.start)
                ),
            ),
            None => Error::format(path, "a tensor's byte length does not match its shape and dtype"),
        },
        other => Error::format(path, format!("invalid safetensors header: {other}")),
    }
}

/// One header entry read without validation, for error messages only.
struct LooseEntry {
    name: String,
    dtype: Option<Dtype>,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl LooseEntry {
    fn needed(&self) -> Option<usize> {
        let n = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        n.checked_mul(self.dtype?.bitsize()).map(|bits| bits / 8)
    }

    fn size_mismatch(&self) -> bool {
        self.needed() != Some(self.end.saturating_sub(self.start))
    }
}

fn lenient(header: &[u8]) -> Vec<LooseEntry> {
    let Ok(map) = serde_json::from_slice::<Map<String, Value>>(header) else {
        return Vec::new();
    };
    let as_usize = |v: &Value| v.as_u64().map(|x| x as usize);
    let mut out = Vec::new();
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let offsets = v.get("data_offsets").and_then(Value::as_array);
        let (Some(start), Some(end)) = (
            offsets.and_then(|o| o.first()).and_then(as_usize),
            offsets.and_then(|o| o.get(1)).and_then(as_usize),
        ) else {
            continue;
        };
        let dtype = v.get("dtype").and_then(|d| serde_json::from_value::<Dtype>(d.clone()).ok());
        let shape = v
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(as_usize).collect())
            .unwrap_or_default();
        out.push(LooseEntry { name, dtype, shape, start, end });
    }
    out
}
