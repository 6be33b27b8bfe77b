//! The trainable parameters on the device: LoRA matrices, prefix keys and values, the
//! classification head; each an f32 master with its gradient and AdamW moments.
//!
//! They are copied from the CPU model's [`ParamStore`] (so both sides start from the same
//! values) and read back under the store's names. The prefix table `[P, n * 2 * D]`
//! (models/peft/prefix.rs) is split into one keys tensor and one values tensor `[P, D]` per
//! adapted layer, the layout the attention kernels read; AdamW is element-wise and the gradient
//! norm a sum over elements, so the split changes no result, and the table is reassembled when
//! read back.

use std::collections::HashMap;

use crate::engine::autograd::ParamStore;
use crate::engine::cuda::kernels::cast::cast;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};
use crate::models::heads::{ClassifierHead, Pooling};
use crate::models::hooks::Proj;
use crate::models::peft::lora::param_names;
use crate::models::peft::prefix::PrefixSource;
use crate::models::peft::{Adaptation, Arch};

/// One trainable f32 tensor: value, gradient (accumulated by the backward kernels), moments.
pub(super) struct Slot {
    pub value: Buffer,
    pub grad: Buffer,
    pub m: Buffer,
    pub v: Buffer,
}

impl Slot {
    fn new(dev: &Device, values: &[f32]) -> Result<Slot> {
        let n = values.len();
        Ok(Slot { value: dev.upload_f32(values, Elem::F32)?, grad: dev.alloc(Elem::F32, n)?, m: dev.alloc(Elem::F32, n)?, v: dev.alloc(Elem::F32, n)? })
    }

    fn part(&self, which: Part) -> &Buffer {
        match which {
            Part::Value => &self.value,
            Part::Grad => &self.grad,
            Part::M => &self.m,
            Part::V => &self.v,
        }
    }
}

/// Which buffer of every trainable tensor to read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Value,
    Grad,
    /// AdamW's first moment.
    M,
    /// AdamW's second moment.
    V,
}

pub(super) struct LoraSite {
    pub layer: usize,
    /// `[r, din]`.
    pub a: Slot,
    /// `[dout, r]`.
    pub b: Slot,
    names: (String, String),
}

pub(super) struct LoraDev {
    pub sites: Vec<LoraSite>,
    lookup: HashMap<(usize, Proj), usize>,
    pub r: usize,
    pub scale: f32,
    pub dropout: f32,
}

impl LoraDev {
    pub fn site(&self, layer: usize, proj: Proj) -> Option<usize> {
        self.lookup.get(&(layer, proj)).copied()
    }
}

pub(super) struct PrefixDev {
    /// P.
    pub tokens: usize,
    /// D: the width of one layer's keys.
    pub width: usize,
    /// The adapted layers, sorted; `keys[j]`, `values[j]` belong to `layers[j]`.
    pub layers: Vec<usize>,
    pub keys: Vec<Slot>,
    pub values: Vec<Slot>,
    /// The keys and values in the activations' type when that is not f32 (refreshed from the
    /// masters before every forward pass).
    pub cast: Vec<(Buffer, Buffer)>,
    /// Added to every position id (peft's convention; models/peft/prefix.rs).
    pub shift: usize,
    name: String,
}

impl PrefixDev {
    /// The keys and values of `layer` in the activations' type, if it has a prefix.
    pub fn kv(&self, layer: usize) -> Option<(&Buffer, &Buffer)> {
        let j = self.layers.binary_search(&layer).ok()?;
        Some(match self.cast.get(j) {
            Some((k, v)) => (k, v),
            None => (&self.keys[j].value, &self.values[j].value),
        })
    }

    /// Rounds the f32 masters into the activations' type (`elem`; nothing to do for f32).
    pub fn refresh(&mut self, dev: &Device, elem: Elem) -> Result<()> {
        if elem == Elem::F32 {
            return Ok(());
        }
        if self.cast.is_empty() {
            for _ in &self.layers {
                let n = self.tokens * self.width;
                self.cast.push((dev.alloc(elem, n)?, dev.alloc(elem, n)?));
            }
        }
        for (j, (k, v)) in self.cast.iter_mut().enumerate() {
            cast(dev, &self.keys[j].value, k)?;
            cast(dev, &self.values[j].value, v)?;
        }
        Ok(())
    }

    /// The table `[P, n * 2 * D]` of `which` buffers, as models/peft/prefix.rs holds it.
    fn assemble(&self, dev: &Device, which: Part) -> Result<Vec<f32>> {
        let (p, d, n) = (self.tokens, self.width, self.layers.len());
        let mut table = vec![0.0f32; p * n * 2 * d];
        for j in 0..n {
            for (off, slot) in [(0, &self.keys[j]), (1, &self.values[j])] {
                let part = dev.download_f32(slot.part(which))?;
                for t in 0..p {
                    let dst = t * n * 2 * d + (2 * j + off) * d;
                    table[dst..dst + d].copy_from_slice(&part[t * d..(t + 1) * d]);
                }
            }
        }
        Ok(table)
    }
}

pub(super) struct HeadDev {
    /// `[classes, hidden]`.
    pub w: Slot,
    /// `[classes]`.
    pub b: Slot,
    pub classes: usize,
    pub pooling: Pooling,
    names: (String, String),
}

pub(super) struct Trainables {
    pub lora: Option<LoraDev>,
    pub prefix: Option<PrefixDev>,
    pub head: HeadDev,
}

fn refuse(what: &str) -> Error {
    Error::Usage(format!("GPU training step: {what} has no GPU path yet (run it on the CPU)"))
}

impl Trainables {
    /// Copies the trainable parameters of `adaptation` and `head` from `store`. Refuses what the
    /// GPU step cannot train (named), and any other trainable parameter of the store, so that
    /// nothing the CPU would train is silently left out.
    pub fn upload(dev: &Device, arch: &Arch, store: &ParamStore, adaptation: &Adaptation, head: &ClassifierHead) -> Result<Trainables> {
        if adaptation.prompt.is_some() {
            return Err(refuse("a soft prompt (prompt tuning)"));
        }
        if adaptation.adapters.is_some() {
            return Err(refuse("a bottleneck adapter"));
        }
        let mut covered: Vec<String> = Vec::new();
        let value = |id| store.value(id).to_f32_cow().into_owned();
        let lora = match &adaptation.lora {
            None => None,
            Some(l) if l.is_merged() => return Err(Error::Usage("GPU training step: the LoRA update is merged into the weights; unmerge it to train".into())),
            Some(l) => {
                let r = l.config.r;
                if r > 64 {
                    return Err(Error::Usage(format!("GPU training step: LoRA rank {r}: the fused kernels take ranks 1 to 64")));
                }
                let mut sites = Vec::new();
                let mut lookup = HashMap::new();
                for s in l.sites() {
                    let names = param_names(arch, s.layer, s.proj);
                    covered.extend([names.0.clone(), names.1.clone()]);
                    lookup.insert((s.layer, s.proj), sites.len());
                    sites.push(LoraSite { layer: s.layer, a: Slot::new(dev, &value(s.a))?, b: Slot::new(dev, &value(s.b))?, names });
                }
                Some(LoraDev { sites, lookup, r, scale: l.scale(), dropout: l.config.dropout })
            }
        };
        let prefix = match &adaptation.prefix {
            None => None,
            Some(p) => {
                let PrefixSource::Table(id) = p.source() else {
                    return Err(refuse("prefix tuning through the reparameterisation MLP (`projection`)"));
                };
                let (tokens, width, layers) = (p.config.virtual_tokens, arch.kv_width(), p.layers().to_vec());
                let n = layers.len();
                let table = value(id);
                if table.len() != tokens * n * 2 * width {
                    return Err(Error::shape("GPU training step", format!("prefix table of {} values for {tokens} tokens x {n} layers x 2 x {width}", table.len())));
                }
                let part = |j: usize, off: usize| -> Vec<f32> {
                    (0..tokens).flat_map(|t| table[t * n * 2 * width + (2 * j + off) * width..][..width].iter().copied()).collect()
                };
                let (mut keys, mut values) = (Vec::with_capacity(n), Vec::with_capacity(n));
                for j in 0..n {
                    keys.push(Slot::new(dev, &part(j, 0))?);
                    values.push(Slot::new(dev, &part(j, 1))?);
                }
                let name = store.name(id).to_string();
                covered.push(name.clone());
                Some(PrefixDev { tokens, width, layers, keys, values, cast: Vec::new(), shift: if p.config.peft_positions { tokens } else { 0 }, name })
            }
        };
        let names = (store.name(head.proj.w).to_string(), store.name(head.proj.b).to_string());
        covered.extend([names.0.clone(), names.1.clone()]);
        let head = HeadDev { w: Slot::new(dev, &value(head.proj.w))?, b: Slot::new(dev, &value(head.proj.b))?, classes: head.classes, pooling: head.pooling, names };
        if let Some(id) = store.trainable_ids().find(|&id| !covered.iter().any(|c| c == store.name(id))) {
            return Err(Error::Usage(format!(
                "GPU training step: `{}` is trainable but belongs to no module the GPU step trains (LoRA, plain prefix, the classifier head)",
                store.name(id)
            )));
        }
        Ok(Trainables { lora, prefix, head })
    }

    /// Every trainable tensor, in a fixed order (LoRA sites, prefix layers, head).
    pub fn slots_mut(&mut self) -> Vec<&mut Slot> {
        let mut v: Vec<&mut Slot> = Vec::new();
        if let Some(l) = &mut self.lora {
            for s in &mut l.sites {
                v.push(&mut s.a);
                v.push(&mut s.b);
            }
        }
        if let Some(p) = &mut self.prefix {
            for (k, val) in p.keys.iter_mut().zip(p.values.iter_mut()) {
                v.push(k);
                v.push(val);
            }
        }
        v.push(&mut self.head.w);
        v.push(&mut self.head.b);
        v
    }

    pub fn zero_grads(&mut self, dev: &Device) -> Result<()> {
        self.slots_mut().into_iter().try_for_each(|s| dev.zero(&mut s.grad))
    }

    /// The lowest layer with a trainable parameter: the backward pass stops there.
    pub fn lowest_layer(&self) -> Option<usize> {
        let l = self.lora.as_ref().and_then(|l| l.sites.iter().map(|s| s.layer).min());
        let p = self.prefix.as_ref().and_then(|p| p.layers.first().copied());
        l.into_iter().chain(p).min()
    }

    /// `which` buffer of every trainable tensor under the store's names (the prefix table
    /// reassembled).
    pub fn download(&self, dev: &Device, which: Part) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out = Vec::new();
        if let Some(l) = &self.lora {
            for s in &l.sites {
                out.push((s.names.0.clone(), dev.download_f32(s.a.part(which))?));
                out.push((s.names.1.clone(), dev.download_f32(s.b.part(which))?));
            }
        }
        if let Some(p) = &self.prefix {
            out.push((p.name.clone(), p.assemble(dev, which)?));
        }
        out.push((self.head.names.0.clone(), dev.download_f32(self.head.w.part(which))?));
        out.push((self.head.names.1.clone(), dev.download_f32(self.head.b.part(which))?));
        Ok(out)
    }
}
