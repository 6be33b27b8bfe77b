//! ggml's tensor types: ids as numbered by `enum ggml_type` in ggml.h, and their block sizes.
//!
//! A quantised row is a sequence of blocks, each holding `block_elems` values in `block_bytes`
//! bytes. Every type ggml defines is listed, so that a file's layout (and the bounds of every
//! tensor) can be checked even when a tensor's type is one this crate cannot dequantise; those
//! fail only when the tensor is read, with an error naming it.

/// One ggml tensor type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block_elems: usize,
    pub block_bytes: usize,
    /// Whether [`super::dequant`] converts it to floats.
    pub supported: bool,
}

const fn t(id: u32, name: &'static str, block_elems: usize, block_bytes: usize, supported: bool) -> GgmlType {
    GgmlType { id, name, block_elems, block_bytes, supported }
}

const QK_K: usize = 256;

pub const F32: GgmlType = t(0, "F32", 1, 4, true);
pub const F16: GgmlType = t(1, "F16", 1, 2, true);
pub const Q4_0: GgmlType = t(2, "Q4_0", 32, 2 + 16, true);
pub const Q4_1: GgmlType = t(3, "Q4_1", 32, 2 + 2 + 16, true);
pub const Q5_0: GgmlType = t(6, "Q5_0", 32, 2 + 4 + 16, true);
pub const Q5_1: GgmlType = t(7, "Q5_1", 32, 2 + 2 + 4 + 16, true);
pub const Q8_0: GgmlType = t(8, "Q8_0", 32, 2 + 32, true);
pub const Q4_K: GgmlType = t(12, "Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2, true);
pub const Q5_K: GgmlType = t(13, "Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, true);
pub const Q6_K: GgmlType = t(14, "Q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, true);
pub const BF16: GgmlType = t(30, "BF16", 1, 2, true);

/// Every type of ggml.h (ids 4 and 5 were removed from ggml and are not valid).
pub const ALL: [GgmlType; 34] = [
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    t(9, "Q8_1", 32, 4 + 4 + 32, false),
    t(10, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, false),
    t(11, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, false),
    Q4_K,
    Q5_K,
    Q6_K,
    t(15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8, false),
    t(16, "IQ2_XXS", QK_K, 2 + QK_K / 4, false),
    t(17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, false),
    t(18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, false),
    t(19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, false),
    t(20, "IQ4_NL", 32, 2 + 16, false),
    t(21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, false),
    t(22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, false),
    t(23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, false),
    t(24, "I8", 1, 1, false),
    t(25, "I16", 1, 2, false),
    t(26, "I32", 1, 4, false),
    t(27, "I64", 1, 8, false),
    t(28, "F64", 1, 8, false),
    t(29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false),
    BF16,
    t(34, "TQ1_0", QK_K, 2 + 4 * 13, false),
    t(35, "TQ2_0", QK_K, 2 + 64, false),
    t(39, "MXFP4", 32, 1 + 16, false),
    t(40, "NVFP4", 64, 4 + 32, false),
    t(41, "Q1_0", 128, 2 + 16, false),
];

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        ALL.iter().copied().find(|t| t.id == id)
    }

    /// Bytes of `elems` values (a whole number of blocks), or `None` when `elems` is not a
    /// multiple of the block size or the size overflows.
    pub fn bytes_for(&self, elems: u64) -> Option<u64> {
        let be = self.block_elems as u64;
        if !elems.is_multiple_of(be) {
            return None;
        }
        (elems / be).checked_mul(self.block_bytes as u64)
    }
}

/// The names of the types this crate dequantises, for error messages.
pub fn supported_names() -> String {
    ALL.iter().filter(|t| t.supported).map(|t| t.name).collect::<Vec<_>>().join(", ")
}
