//! Contiguous row-major tensors.
//!
//! The engine computes in f32; storage is f32, bf16 or f16, either owned or a slice of a
//! memory-mapped weight file (loading a model maps the file instead of copying it). A tensor is
//! a shape and a reference-counted storage: cloning and reshaping are free, and a tensor kept
//! for the backward pass shares its buffer with the forward value.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use crate::engine::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" | "float32" => Some(DType::F32),
            "bf16" | "bfloat16" => Some(DType::BF16),
            "f16" | "float16" => Some(DType::F16),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The elements behind a tensor.
pub enum Storage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    /// `len` elements of `dtype` at byte `offset` of a mapped file; the offset is aligned to the
    /// element size (checked when the tensor is made).
    Mapped { map: Arc<Mmap>, offset: usize, len: usize, dtype: DType },
}

/// A borrowed view of a tensor's elements in their stored type.
#[derive(Clone, Copy)]
pub enum View<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

impl<'a> View<'a> {
    pub fn len(&self) -> usize {
        match self {
            View::F32(s) => s.len(),
            View::BF16(s) => s.len(),
            View::F16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            View::F32(_) => DType::F32,
            View::BF16(_) => DType::BF16,
            View::F16(_) => DType::F16,
        }
    }

    /// Element `i` as f32.
    #[inline(always)]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            View::F32(s) => s[i],
            View::BF16(s) => s[i].to_f32(),
            View::F16(s) => s[i].to_f32(),
        }
    }

    /// Elements `range` converted to f32 into `out`.
    pub fn copy_to_f32(&self, start: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            View::F32(s) => out.copy_from_slice(&s[start..start + n]),
            View::BF16(s) => {
                for (o, v) in out.iter_mut().zip(&s[start..start + n]) {
                    *o = v.to_f32();
                }
            }
            View::F16(s) => {
                for (o, v) in out.iter_mut().zip(&s[start..start + n]) {
                    *o = v.to_f32();
                }
            }
        }
    }

    pub fn to_f32_cow(&self) -> Cow<'a, [f32]> {
        match *self {
            View::F32(s) => Cow::Borrowed(s),
            _ => {
                let mut v = vec![0.0; self.len()];
                self.copy_to_f32(0, &mut v);
                Cow::Owned(v)
            }
        }
    }
}

impl Storage {
    pub fn view(&self) -> View<'_> {
        match self {
            Storage::F32(v) => View::F32(v),
            Storage::BF16(v) => View::BF16(v),
            Storage::F16(v) => View::F16(v),
            Storage::Mapped { map, offset, len, dtype } => {
                let bytes = &map[*offset..*offset + len * dtype.size()];
                // Alignment was checked in `Tensor::from_mapped`.
                match dtype {
                    DType::F32 => View::F32(bytemuck::cast_slice(bytes)),
                    DType::BF16 => View::BF16(bytemuck::cast_slice(bytes)),
                    DType::F16 => View::F16(bytemuck::cast_slice(bytes)),
                }
            }
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped { .. })
    }
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Storage>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype())
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An f32 tensor owning `data`. The length must match the shape (an internal invariant:
    /// user-facing constructors use [`Tensor::try_new`]).
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Tensor {
        assert_eq!(data.len(), numel(shape), "tensor data length does not match shape {shape:?}");
        Tensor { shape: shape.to_vec(), storage: Arc::new(Storage::F32(data)) }
    }

    pub fn try_new(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "tensor",
                format!("{} elements cannot have shape {shape:?}", data.len()),
            ));
        }
        Ok(Tensor::new(data, shape))
    }

    pub fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        assert_eq!(storage.view().len(), numel(shape), "storage length does not match {shape:?}");
        Tensor { shape: shape.to_vec(), storage: Arc::new(storage) }
    }

    /// A tensor that reads `numel(shape)` elements of `dtype` at byte `offset` of `map` in place.
    /// Returns `None` when the offset is not aligned to the element size (the caller copies).
    pub fn from_mapped(map: Arc<Mmap>, offset: usize, dtype: DType, shape: &[usize]) -> Option<Tensor> {
        let len = numel(shape);
        let end = offset.checked_add(len.checked_mul(dtype.size())?)?;
        if end > map.len() || (map.as_ptr() as usize + offset) % dtype.size() != 0 {
            return None;
        }
        let storage = Storage::Mapped { map, offset, len, dtype };
        Some(Tensor { shape: shape.to_vec(), storage: Arc::new(storage) })
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::new(vec![0.0; numel(shape)], shape)
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::new(vec![value; numel(shape)], shape)
    }

    pub fn scalar(value: f32) -> Tensor {
        Tensor::new(vec![value], &[])
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }

    /// The last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn dtype(&self) -> DType {
        self.view().dtype()
    }

    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    pub fn is_mapped(&self) -> bool {
        self.storage.is_mapped()
    }

    pub fn view(&self) -> View<'_> {
        self.storage.view()
    }

    /// The elements of an f32 tensor. Activations and gradients are always f32; calling this on
    /// a bf16/f16 tensor is a bug in the caller, not a user error.
    pub fn f32s(&self) -> &[f32] {
        match self.view() {
            View::F32(s) => s,
            other => panic!("expected an f32 tensor, found {}", other.dtype()),
        }
    }

    /// The elements as f32, borrowed when already f32.
    pub fn to_f32_cow(&self) -> Cow<'_, [f32]> {
        self.view().to_f32_cow()
    }

    /// The elements as an owned f32 vector, without a copy when this is the only owner.
    pub fn into_f32_vec(self) -> Vec<f32> {
        match Arc::try_unwrap(self.storage) {
            Ok(Storage::F32(v)) => v,
            Ok(other) => other.view().to_f32_cow().into_owned(),
            Err(shared) => shared.view().to_f32_cow().into_owned(),
        }
    }

    /// Mutable f32 elements; copies (and converts) the storage first if it is shared, mapped or
    /// not f32.
    pub fn f32s_mut(&mut self) -> &mut [f32] {
        let owned_f32 = matches!(Arc::get_mut(&mut self.storage), Some(Storage::F32(_)));
        if !owned_f32 {
            let v = self.storage.view().to_f32_cow().into_owned();
            self.storage = Arc::new(Storage::F32(v));
        }
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::F32(v)) => v,
            _ => unreachable!("storage was just made unique and f32"),
        }
    }

    /// The same elements under another shape of equal size (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {shape:?}", self.shape),
            ));
        }
        Ok(Tensor { shape: shape.to_vec(), storage: self.storage.clone() })
    }

    /// A copy in another storage type (rounding to nearest even for bf16/f16).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let v = self.to_f32_cow();
        let storage = match dtype {
            DType::F32 => Storage::F32(v.into_owned()),
            DType::BF16 => Storage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::F16 => Storage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        };
        Tensor { shape: self.shape.clone(), storage: Arc::new(storage) }
    }

    /// Identifies the buffer behind this tensor (shared by clones and reshapes), so that bytes
    /// kept for backward are counted once.
    pub fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.storage) as *const u8 as usize
    }

    /// Checks the shape, naming `what` in the error.
    pub fn expect_shape(&self, what: &'static str, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(Error::shape(what, format!("expected shape {shape:?}, found {:?}", self.shape)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_shares_storage_and_checks_size() {
        let t = Tensor::new((0..6).map(|x| x as f32).collect(), &[2, 3]);
        let r = t.reshape(&[3, 2]).unwrap();
        assert_eq!(r.storage_id(), t.storage_id());
        assert!(t.reshape(&[4, 2]).is_err());
    }

    #[test]
    fn f32s_mut_copies_shared_storage() {
        let a = Tensor::new(vec![1.0, 2.0], &[2]);
        let mut b = a.clone();
        b.f32s_mut()[0] = 5.0;
        assert_eq!(a.f32s(), &[1.0, 2.0]);
        assert_eq!(b.f32s(), &[5.0, 2.0]);
    }

    #[test]
    fn dtype_round_trip() {
        let a = Tensor::new(vec![1.0, -2.5, 3.0e-3], &[3]);
        let b = a.to_dtype(DType::BF16);
        assert_eq!(b.dtype(), DType::BF16);
        assert_eq!(b.nbytes(), 6);
        let c = b.to_dtype(DType::F32);
        for (x, y) in a.f32s().iter().zip(c.f32s()) {
            assert!((x - y).abs() <= x.abs() / 128.0);
        }
    }
}
