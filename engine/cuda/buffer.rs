//! Typed allocations on a device.
//!
//! A [`Buffer`] is `len` elements of one [`Elem`] on the GPU (a cudarc allocation) or, for the
//! host shim, in host memory that the shim's kernels read and write through raw pointers.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::engine::tensor::DType;

/// Element types of device buffers: the float types of tensors, and the integers that
/// kernels take as indices (token ids, targets, offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    BF16,
    F16,
    I32,
    I64,
    U32,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::BF16 | Elem::F16 => 2,
            Elem::I64 => 8,
        }
    }

    /// The suffix of the kernels that take this element type (`layernorm_fwd_bf16`).
    pub fn suffix(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::BF16 => "bf16",
            Elem::F16 => "f16",
            Elem::I32 => "i32",
            Elem::I64 => "i64",
            Elem::U32 => "u32",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Elem::F32 | Elem::BF16 | Elem::F16)
    }
}

impl From<DType> for Elem {
    fn from(d: DType) -> Elem {
        match d {
            DType::F32 => Elem::F32,
            DType::BF16 => Elem::BF16,
            DType::F16 => Elem::F16,
        }
    }
}

/// Host memory for the shim, 64-byte aligned and zeroed. Kernels write it through raw
/// pointers, so it is never borrowed as a slice while a launch runs.
pub(crate) struct HostMem {
    ptr: NonNull<u8>,
    bytes: usize,
}

// The memory is plain bytes owned by this value.
unsafe impl Send for HostMem {}
unsafe impl Sync for HostMem {}

impl HostMem {
    fn layout(bytes: usize) -> Layout {
        Layout::from_size_align(bytes.max(1), 64).expect("buffer size fits a layout")
    }

    #[cfg_attr(not(feature = "cuda-shim"), allow(dead_code))]
    pub(crate) fn zeroed(bytes: usize) -> HostMem {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(Self::layout(bytes)) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout(bytes)));
        HostMem { ptr, bytes }
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `bytes` initialised bytes live at `ptr` for as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.bytes) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` excludes every other access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.bytes) }
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with the same layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.bytes)) }
    }
}

pub(crate) enum Mem {
    #[cfg_attr(not(feature = "cuda-shim"), allow(dead_code))]
    Host(HostMem),
    Gpu(super::gpu::GpuMem),
}

/// `len` elements of `elem` on one device (see [`super::Device`] for allocation and copies).
pub struct Buffer {
    pub(crate) elem: Elem,
    pub(crate) len: usize,
    pub(crate) mem: Mem,
}

impl Buffer {
    pub fn elem(&self) -> Elem {
        self.elem
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.len * self.elem.size()
    }

    /// The address a kernel receives: a device pointer, or a host pointer for the shim.
    pub(crate) fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Host(h) => h.addr(),
            Mem::Gpu(g) => g.addr(),
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.mem {
            Mem::Host(_) => "host shim",
            Mem::Gpu(_) => "gpu",
        };
        write!(f, "Buffer({} x {:?} on {place})", self.len, self.elem)
    }
}

/// f32 values as `elem` bytes (bf16/f16 rounded to nearest even, as `half`).
pub(crate) fn encode_f32(data: &[f32], elem: Elem) -> Vec<u8> {
    match elem {
        Elem::F32 => bytemuck::cast_slice(data).to_vec(),
        Elem::BF16 => data.iter().flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes()).collect(),
        Elem::F16 => data.iter().flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes()).collect(),
        other => panic!("encode_f32 into {other:?}: not a float type"),
    }
}

/// `elem` bytes as f32 values.
pub(crate) fn decode_f32(bytes: &[u8], elem: Elem) -> Vec<f32> {
    match elem {
        Elem::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Elem::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        Elem::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        other => panic!("decode_f32 from {other:?}: not a float type"),
    }
}
