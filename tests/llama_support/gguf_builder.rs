//! Writes small GGUF files byte by byte, broken ones included, for the reader's error tests.

#![allow(dead_code)]

pub struct GgufBuilder {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    counts: Option<(u64, u64)>,
    data: usize,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufBuilder {
    pub fn new() -> GgufBuilder {
        GgufBuilder { kv: Vec::new(), n_kv: 0, infos: Vec::new(), n_tensors: 0, counts: None, data: 0 }
    }

    /// A key with value type `ty` followed by `raw` value bytes, as they are.
    pub fn kv_raw(mut self, key: &str, ty: u32, raw: &[u8]) -> Self {
        string(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(raw);
        self.n_kv += 1;
        self
    }

    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    /// A tensor info: `dims` fastest first, ggml type id `ty`, data `offset`.
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        string(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    /// `n` bytes of tensor data after the (32-aligned) header.
    pub fn data(mut self, n: usize) -> Self {
        self.data = n;
        self
    }

    /// Overrides the tensor and key/value counts written in the header.
    pub fn counts(mut self, tensors: u64, kv: u64) -> Self {
        self.counts = Some((tensors, kv));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let (nt, nkv) = self.counts.unwrap_or((self.n_tensors, self.n_kv));
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(nt.to_le_bytes());
        out.extend(nkv.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.infos);
        if self.data > 0 {
            out.resize(out.len().div_ceil(32) * 32, 0);
            out.extend((0..self.data).map(|i| (i * 7 % 251) as u8));
        }
        out
    }
}

impl GgufBuilder {
    pub fn kv_str(self, key: &str, v: &str) -> Self {
        let mut raw = Vec::new();
        string(&mut raw, v);
        self.kv_raw(key, 8, &raw)
    }

    pub fn kv_str_array(self, key: &str, items: &[&str]) -> Self {
        let mut raw = 8u32.to_le_bytes().to_vec();
        raw.extend((items.len() as u64).to_le_bytes());
        for s in items {
            string(&mut raw, s);
        }
        self.kv_raw(key, 9, &raw)
    }

    /// The metadata of a LLaMA with `layers` layers of width 8 (2 heads), vocabulary 4.
    pub fn llama_metadata(self, arch: &str) -> Self {
        self.kv_str("general.architecture", arch)
            .kv_u32(&format!("{arch}.block_count"), 1)
            .kv_u32(&format!("{arch}.embedding_length"), 8)
            .kv_u32(&format!("{arch}.feed_forward_length"), 16)
            .kv_u32(&format!("{arch}.attention.head_count"), 2)
            .kv_u32(&format!("{arch}.context_length"), 16)
            .kv_u32(&format!("{arch}.vocab_size"), 4)
    }
}
