//! Launchers for kernels/embedding.cu: token lookup with the soft prompt concatenated in front
//! of every sequence, and the gradients of the prompt and (when trainable) the table.

use super::super::{Buffer, Device, Elem, KArg, Launch};
use super::{expect, expect_float, int};
use crate::engine::error::{Error, Result};

/// Where the sequences are: cumulative token offsets (`offsets[0] = 0`, non-decreasing).
fn check_offsets(op: &'static str, offsets: &[i32], ntok: usize) -> Result<usize> {
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[1] < w[0]) || *offsets.last().unwrap() as usize != ntok {
        return Err(Error::shape(op, format!("offsets must rise from 0 to {ntok} tokens: {offsets:?}")));
    }
    Ok(offsets.len() - 1)
}

/// `out [ntok + B*P, d]` = per sequence, the P prompt rows then the table rows of its ids.
/// `ids` and `offsets` are host values (checked against the vocabulary here).
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    dev: &Device,
    table: &Buffer,
    vocab: usize,
    d: usize,
    ids: &[i32],
    offsets: &[i32],
    prompt: Option<&Buffer>,
    p: usize,
    out: &mut Buffer,
) -> Result<()> {
    let op = "embedding";
    let batch = check_offsets(op, offsets, ids.len())?;
    expect_float(op, "table", table, table.elem(), vocab * d)?;
    if let Some((pos, &id)) = ids.iter().enumerate().find(|&(_, &id)| id < 0 || id as usize >= vocab) {
        return Err(Error::shape(op, format!("token id {id} (position {pos}) is out of range for a vocabulary of {vocab}")));
    }
    match prompt {
        Some(pb) => expect(op, "prompt", pb, Elem::F32, p * d)?,
        None if p > 0 => return Err(Error::shape(op, "a prompt length without a prompt")),
        None => {}
    }
    let rows = ids.len() + batch * p;
    expect(op, "out", out, table.elem(), rows * d)?;
    if rows == 0 || d == 0 {
        return Ok(());
    }
    let idb = dev.upload(ids, Elem::I32)?;
    let ob = dev.upload(offsets, Elem::I32)?;
    let k = format!("embedding_fwd_{}", table.elem().suffix());
    let args = [
        KArg::In(table),
        KArg::In(&idb),
        KArg::In(&ob),
        KArg::Opt(prompt),
        KArg::Out(out),
        KArg::I32(int(op, "batch", batch)?),
        KArg::I32(int(op, "prompt length", p)?),
        KArg::I32(int(op, "d", d)?),
    ];
    dev.launch("embedding", &k, Launch::linear(rows, 128), &args)
}

/// `dprompt += sum over sequences of the prompt rows of dout` (sequence order).
pub fn embedding_backward_prompt(dev: &Device, dout: &Buffer, offsets: &[i32], p: usize, d: usize, dprompt: &mut Buffer) -> Result<()> {
    let op = "embedding_backward";
    let ntok = offsets.last().map_or(0, |&t| t.max(0) as usize);
    let batch = check_offsets(op, offsets, ntok)?;
    expect_float(op, "dout", dout, dout.elem(), (ntok + batch * p) * d)?;
    expect(op, "dprompt", dprompt, Elem::F32, p * d)?;
    if p * d == 0 {
        return Ok(());
    }
    let ob = dev.upload(offsets, Elem::I32)?;
    let k = format!("embedding_bwd_prompt_{}", dout.elem().suffix());
    let args = [KArg::In(dout), KArg::In(&ob), KArg::Out(dprompt), KArg::I32(int(op, "batch", batch)?), KArg::I32(p as i32), KArg::I32(int(op, "d", d)?)];
    dev.launch("embedding", &k, Launch::cover(p * d, 256), &args)
}

/// `dtable[v] += sum of dout rows of the tokens with id v`, each table row summed in token
/// order by one block (the positions are grouped by id here, on the host).
pub fn embedding_backward_table(dev: &Device, dout: &Buffer, ids: &[i32], offsets: &[i32], p: usize, vocab: usize, d: usize, dtable: &mut Buffer) -> Result<()> {
    let op = "embedding_backward";
    let batch = check_offsets(op, offsets, ids.len())?;
    expect_float(op, "dout", dout, dout.elem(), (ids.len() + batch * p) * d)?;
    expect(op, "dtable", dtable, Elem::F32, vocab * d)?;
    if let Some((pos, &id)) = ids.iter().enumerate().find(|&(_, &id)| id < 0 || id as usize >= vocab) {
        return Err(Error::shape(op, format!("token id {id} (position {pos}) is out of range for a vocabulary of {vocab}")));
    }
    if ids.is_empty() || d == 0 {
        return Ok(());
    }
    // Output row of each token, then the rows grouped by id (stable: token order within an id).
    let mut rows = Vec::with_capacity(ids.len());
    for b in 0..batch {
        for t in offsets[b]..offsets[b + 1] {
            rows.push(t + ((b + 1) * p) as i32); // after its sequence's P prompt rows
        }
    }
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    let (mut uniq, mut starts, mut grouped) = (Vec::new(), Vec::new(), Vec::with_capacity(ids.len()));
    for (k, &i) in order.iter().enumerate() {
        if uniq.last() != Some(&ids[i]) {
            uniq.push(ids[i]);
            starts.push(k as i32);
        }
        grouped.push(rows[i]);
    }
    starts.push(ids.len() as i32);
    let (ub, sb, rb) = (dev.upload(&uniq, Elem::I32)?, dev.upload(&starts, Elem::I32)?, dev.upload(&grouped, Elem::I32)?);
    let k = format!("embedding_bwd_table_{}", dout.elem().suffix());
    let args = [KArg::In(dout), KArg::In(&ub), KArg::In(&sb), KArg::In(&rb), KArg::Out(dtable), KArg::I32(int(op, "d", d)?)];
    dev.launch("embedding", &k, Launch::linear(uniq.len(), 128), &args)
}
